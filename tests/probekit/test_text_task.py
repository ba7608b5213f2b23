"""The ``text`` task: its locally trained byte-level BPE, corpus, split, labels and errors."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

import probekit as pk
from probekit.tasks.text import Text, default_corpus, python_char_labels, read_text, train_bpe
from probekit.tokenizer import load_tokenizer, save_tokenizer

SOURCE = '''import os


def f(x):
    # a comment
    s = "hello # world"  # trailing
    if x:
        return f"{s}!"
    return None
'''


@pytest.fixture(scope="module")
def task() -> Text:
    return Text()


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> list[Path]:
    """A user corpus: two Python modules of the standard library, a README, a module that is not Python."""
    d = tmp_path_factory.mktemp("corpus")
    stdlib = Path(os.path.dirname(os.__file__))
    for name in ("bisect.py", "heapq.py", "colorsys.py"):
        (d / name).write_text(read_text(stdlib / name))
    (d / "notes.txt").write_text("Plain text, not Python: it has no indentation labels.\n" * 40)
    (d / "broken.py").write_text("def f(:\n    return [\n" * 60)
    return sorted(d.iterdir())


def test_specials_come_first_and_the_vocabulary_has_its_size(task):
    tok = task.tokenizer()
    assert task.vocab()[:3] == ["<bos>", "<pad>", "<unk>"] and task.d_vocab == 1024
    assert (tok.bos_token_id, tok.pad_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("x = 1")["input_ids"][0] == 0, "<bos> is prepended"


def test_byte_level_bpe_is_lossless_on_the_corpus(task):
    tok = task.tokenizer()
    for path in task.files("test")[:3]:
        text = read_text(path)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert len(ids) < 0.6 * len(text.encode()), "BPE merges compress the text"


def test_vocab_strings_are_the_decoded_bytes(task):
    tok = task.tokenizer()
    for i, s in enumerate(task.vocab()[3:], 3):
        decoded = tok.decode([i])
        if "\ufffd" in decoded:  # part of a multi-byte character: shown as its bytes
            assert "<0x" in s and "\ufffd" not in s
        else:
            assert s == decoded
    assert " def" in task.vocab() and "\n" in task.vocab()


def test_tokenizer_saves_as_tokenizer_json_and_reloads(task, tmp_path):
    save_tokenizer(task.tokenizer(), tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    assert data["model"]["type"] == "BPE"
    again = load_tokenizer(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = read_text(task.files("train")[0])[:2000]
    assert again(text)["input_ids"] == task.tokenizer()(text)["input_ids"]
    assert raw.encode(text, add_special_tokens=False).ids == task.tokenizer()(text, add_special_tokens=False)["input_ids"]


def test_transformer_lens_uses_the_tokenizer_as_is(task):
    model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=task.d_vocab, n_ctx=64),
                           tokenizer=task.tokenizer())
    assert model.cfg.d_vocab == task.d_vocab and len(model.tokenizer) == task.d_vocab
    text = "def f(x):\n    return x"
    ids = task.tokenizer()(text, add_special_tokens=False)["input_ids"]
    strs = model.to_str_tokens(text)
    assert strs[-len(ids):] == [task.vocab()[i] for i in ids]
    assert model(torch.tensor([ids])).shape == (1, len(ids), task.d_vocab)


def _digest(texts: list[str]) -> str:
    return hashlib.sha256(train_bpe(texts, 400).to_str().encode()).hexdigest()


def test_training_is_deterministic(small_files):
    # the trainer's hash maps are seeded afresh for every map, so two runs see different orders
    texts = [read_text(p) for p in small_files]
    assert _digest(texts) == _digest(texts)


@pytest.mark.slow
def test_training_is_deterministic_across_processes(small_files):
    texts = [read_text(p) for p in small_files]
    here = _digest(texts)
    code = ("import hashlib, sys; from probekit.tasks.text import read_text, train_bpe;"
            "t = [read_text(p) for p in sys.argv[1:]];"
            "print(hashlib.sha256(train_bpe(t, 400).to_str().encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, *map(str, small_files)], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.strip() == here


def test_default_corpus_is_a_sorted_bounded_stdlib_subset(task):
    files = default_corpus()
    assert files == sorted(files) and len(files) > 10
    assert sum(f.stat().st_size for f in files) <= 1_000_000
    train, test = set(task.files("train")), set(task.files("test"))
    assert train and test and not train & test
    assert train | test == {str(f) for f in files}
    assert Text().tokenizer() is task.tokenizer(), "trained once per corpus"


def test_windows_come_from_their_split(task):
    test_files = set(task.files("test"))
    assert all(p in test_files for p, _ in task.windows(32, seed=0, split="test"))
    assert not any(p in test_files for p, _ in task.windows(32, seed=0, split="train"))


def test_round_trips_through_to_dict(task):
    again = pk.tasks.from_dict(json.loads(json.dumps(task.to_dict())))
    assert torch.equal(again.batch(4, seed=2).tokens, task.batch(4, seed=2).tokens)


def test_char_labels_of_a_known_snippet():
    lab = python_char_labels(SOURCE)
    at = lambda s, k=0: SOURCE.index(s) + k  # noqa: E731
    # strings, with the '#' inside one not a comment; f-strings whole
    assert lab["in_string"][at('"hello')] and lab["in_string"][at("# world")] and lab["in_string"][at('f"{s}')]
    assert lab["in_string"][at("{s}", 1)]
    assert not lab["in_comment"][at("# world")]
    assert lab["in_comment"][at("# a comment")] and lab["in_comment"][at("# trailing", 5)]
    assert not lab["in_string"][at("s = ")] and not lab["in_comment"][at("s = ")]
    # indentation levels: 0 at module level, 1 in f, 2 under the if
    assert lab["indent"][at("import")] == 0 and lab["indent"][at("def")] == 0
    assert lab["indent"][at("s = ")] == 1 and lab["indent"][at("if x")] == 1
    assert lab["indent"][at("return f")] == 2 and lab["indent"][at("return None")] == 1
    assert python_char_labels("def f(:\n") is None


def test_user_files_non_python_files_have_no_labels(small_files):
    task = Text(paths=[str(small_files[0].parent)], vocab_size=400, seq_len=32)
    assert {Path(p).name for p in task.files("train")} | {Path(p).name for p in task.files("test")} == \
        {p.name for p in small_files}
    b = task.batch(64, seed=0)
    for i, (path, _) in enumerate(task.windows(64, seed=0, split="train")):
        defined = path.endswith(".py") and "broken" not in path
        assert bool(b.label_mask["indent"][i, 1:].all()) == defined and not b.label_mask["indent"][i, 0]


def test_a_single_file_is_split_by_position(small_files):
    task = Text(paths=[str(small_files[0])], vocab_size=300, seq_len=16)
    train_starts = [s for _, s in task.windows(200, 0, "train")]
    test_starts = [s for _, s in task.windows(200, 0, "test")]
    assert max(train_starts) + 15 <= min(test_starts), "train windows end before the held-out tail starts"


@pytest.mark.parametrize("params, match", [
    ({"paths": ["/no/such/file.py"]}, "not found"),
    ({"vocab_size": 100}, "vocab_size"),
    ({"seq_len": 1}, "seq_len"),
    ({"test_fraction": 1.5}, "test_fraction"),
])
def test_bad_parameters_are_one_line_errors(params, match):
    with pytest.raises(pk.ProbekitError, match=match) as e:
        Text(**params)
    assert "\n" not in str(e.value)


def test_too_short_files_are_an_error(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    with pytest.raises(pk.ProbekitError, match="tokens"):
        Text(paths=[str(tmp_path)], vocab_size=300)


def _ast_string_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of string and bytes literals (f-strings whole), from ``ast`` rather than ``tokenize``."""
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)

    def char(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

    return sorted((char(n.lineno, n.col_offset), char(n.end_lineno, n.end_col_offset))
                  for n in ast.walk(ast.parse(text))
                  if isinstance(n, ast.JoinedStr) or (isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes))))


def test_in_string_agrees_with_the_ast(task):
    b = task.batch(16, seed=5, split="test")
    tok, checked = task.tokenizer(), 0
    for i, (path, start) in enumerate(task.windows(16, seed=5, split="test")):
        text = read_text(path)
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        spans = _ast_string_spans(text)
        for p in range(task.n_ctx - 1):
            s, e = offsets[start + p]
            a = next((c for c in range(s, e) if not text[c].isspace()), None)
            if a is None:  # whitespace between the parts of an implicitly concatenated literal is in its ast span
                continue
            in_ast = any(lo <= a < hi for lo, hi in spans)
            got = int(b.labels["in_string"][i, p + 1])
            # implicitly concatenated literals span the comments between their parts in the ast
            assert got == in_ast or (in_ast and b.labels["in_comment"][i, p + 1] == 1), (path, a)
            checked += got
    assert checked > 0


def test_cached_rows_carry_the_text_labels(task):
    model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=task.d_vocab, n_ctx=64),
                           tokenizer=task.tokenizer())
    store = pk.cache_activations(model, task, hooks=["resid_post"], n=4, batch_size=2)
    b = task.batch(4, seed=0, split="test")
    assert len(store) == 4 * task.n_ctx
    assert torch.equal(store.token, b.tokens.flatten())
    for name in ("indent", "in_string", "in_comment"):
        y, m = store.label(name)
        assert torch.equal(y[m], b.labels[name][b.label_mask[name]])
