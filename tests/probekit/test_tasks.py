"""Every registered task: determinism, shapes, tokenizer consistency, and its labels and
patching pairs against an independent computation written here (from token strings,
never from the task's own helpers)."""

from __future__ import annotations

import ast
import bisect
import io
import tokenize
from functools import cache

import pytest
import torch

import probekit as pk

N = 8


@cache
def _task(name: str) -> pk.tasks.Task:
    return pk.tasks.get(name)


@pytest.fixture(params=pk.tasks.names())
def task(request) -> pk.tasks.Task:
    return _task(request.param)


def strings(task, row) -> list[str]:
    vocab = task.vocab()
    return [vocab[t] for t in row.tolist()]


# ---------------------------------------------------------------- generic contract


def test_registry_lists_the_tasks():
    assert set(pk.tasks.names()) >= {"induction", "modular", "parens", "gridworld", "text"}
    with pytest.raises(pk.ProbekitError, match="parens"):
        pk.tasks.get("paren")


def test_same_seed_same_batch_other_seed_other_batch(task):
    a, b = task.batch(N, seed=0), task.batch(N, seed=0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    for k in a.labels:
        assert torch.equal(a.labels[k], b.labels[k]) and torch.equal(a.label_mask[k], b.label_mask[k])
    assert not torch.equal(a.tokens, task.batch(N, seed=1).tokens)
    assert not torch.equal(a.tokens, task.batch(N, seed=0, split="test").tokens)
    p, q = task.patching_pairs(4, seed=0), task.patching_pairs(4, seed=0)
    assert torch.equal(p.clean, q.clean) and torch.equal(p.corrupt, q.corrupt) and torch.equal(p.answers, q.answers)
    with pytest.raises(pk.ProbekitError, match="split"):
        task.batch(2, seed=0, split="valid")


def test_shapes_dtypes_and_label_masks(task):
    b = task.batch(N, seed=3)
    assert b.tokens.shape == (N, task.n_ctx) and b.tokens.dtype == torch.long
    assert b.mask.shape == b.tokens.shape and b.mask.dtype == torch.bool
    assert bool(b.mask.all())  # built-in tasks have no padding
    assert int(b.tokens.min()) >= 0 and int(b.tokens.max()) < task.d_vocab
    assert (b.tokens[:, 0] == task.bos).all()
    assert [s.name for s in task.label_specs] == list(b.labels) == list(b.label_mask)
    for spec in task.label_specs:
        y, m = b.labels[spec.name], b.label_mask[spec.name]
        assert y.shape == m.shape == b.tokens.shape and m.dtype == torch.bool
        assert not m[:, 0].any(), "no label is defined at <bos>"
        assert m.any(), f"{spec.name} is defined somewhere"
        assert task.label(spec.name) is spec
        if spec.kind == "classification":
            assert y.dtype == torch.long and int(y[m].min()) >= 0
            if spec.classes is not None:
                assert int(y[m].max()) < len(spec.classes)
        else:
            assert y.dtype.is_floating_point
    with pytest.raises(pk.ProbekitError):
        task.label("no_such_label")


def test_vocab_round_trips_through_the_tokenizer(task):
    vocab, tok = task.vocab(), task.tokenizer()
    assert vocab[:3] == ["<bos>", "<pad>", "<unk>"]
    assert len(tok) == len(vocab) == task.d_vocab
    assert len(set(vocab)) == len(vocab)
    for i, s in enumerate(vocab):
        assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(i)) == i
        if not s.startswith("<0x"):  # byte-level pieces of a multi-byte character have no text of their own
            assert tok.decode([i]) == s, (i, s)
    row = task.batch(1, seed=0).tokens[0]
    assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(row.tolist())) == row.tolist()
    if task.name != "text":  # word-level: the printed strings, space-joined, encode back to the row (with <bos>)
        assert tok(" ".join(strings(task, row[1:])))["input_ids"] == row.tolist()
    else:
        assert tok("x = 1")["input_ids"][0] == task.bos


# ---------------------------------------------------------------- labels, independently


def check_induction(task, b):
    for row, rep, prev in zip(b.tokens.tolist(), b.labels["in_repeat"].tolist(), b.labels["prev_token"].tolist()):
        ones = [i for i, v in enumerate(rep) if v]
        t, L = ones[0], len(ones)
        assert ones == list(range(t, t + L)), "the repeated copy is one contiguous run"
        assert task.min_rep <= L <= task.max_rep
        assert any(row[s : s + L] == row[t : t + L] for s in range(1, t - L + 1)), "it copies an earlier segment"
        assert prev[1:] == row[:-1]


def check_parens(task, b):
    for row, depth, top in zip(b.tokens, b.labels["depth"].tolist(), b.labels["top"].tolist()):
        stack: list[str] = []
        want_depth, want_top = [], []
        for s in strings(task, row)[1:]:
            if s in "([":
                stack.append(s)
            else:
                assert stack and {")": "(", "]": "["}[s] == stack.pop(), "balanced and well nested"
            want_depth.append(len(stack))
            want_top.append({"(": 1, "[": 2}[stack[-1]] if stack else 0)
        assert depth[1:] == want_depth and top[1:] == want_top
        assert want_depth[-1] == 0 and max(want_depth) <= task.max_depth


MOVES = {"N": (0, 1), "S": (0, -1), "E": (1, 0), "W": (-1, 0)}


def replay(task, row) -> list[tuple[int, int]]:
    """(x, y) after each token (from ``sK``), by the move names; asserts every step stays on the grid."""
    ss = strings(task, row)[1:]
    k = int(ss[0][1:])
    x, y = k % task.size, k // task.size
    out = [(x, y)]
    for s in ss[1:]:
        x, y = x + MOVES[s][0], y + MOVES[s][1]
        assert 0 <= x < task.size and 0 <= y < task.size, "moves stay on the grid"
        out.append((x, y))
    return out


def check_gridworld(task, b):
    for i, row in enumerate(b.tokens):
        xy = replay(task, row)
        assert b.labels["x"][i, 1:].tolist() == [x for x, _ in xy]
        assert b.labels["y"][i, 1:].tolist() == [y for _, y in xy]
        assert b.labels["cell"][i, 1:].tolist() == [y * task.size + x for x, y in xy]


def check_modular(task, b):
    for i, row in enumerate(b.tokens):
        ss = strings(task, row)
        assert ss[2] == "+" and ss[4] == "="
        a, c, s = int(ss[1]), int(ss[3]), int(ss[5])
        assert s == (a + c) % task.p
        m = b.label_mask["sum"][i]
        assert m.tolist() == [s == "=" for s in ss], "defined at '=' only"
        assert int(b.labels["a"][i][m]) == a and int(b.labels["b"][i][m]) == c and int(b.labels["sum"][i][m]) == s


@cache
def _encoded(task, path: str):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    enc = task.tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True)
    return text, enc["input_ids"], enc["offset_mapping"]


def anchor(text: str, start: int, end: int) -> int:
    return next((i for i in range(start, end) if not text[i].isspace()), start)


@cache
def tokenize_spans(text: str):
    """Sorted (start, end) (row, col) spans of STRING (f-strings whole) and COMMENT tokens, by tokenize."""
    strs, comments, open_f = [], [], []
    for t in tokenize.generate_tokens(io.StringIO(text).readline):
        name = tokenize.tok_name[t.type]
        if name == "STRING":
            strs.append((t.start, t.end))
        elif name == "COMMENT":
            comments.append((t.start, t.end))
        elif name == "FSTRING_START":
            open_f.append(t.start)
        elif name == "FSTRING_END":
            strs.append((open_f.pop(), t.end))
    return sorted(strs), sorted(comments)


@cache
def statement_line_levels(text: str) -> dict[int, int]:
    """Indentation level of every line that starts a statement (or a ``case``), by the
    language reference's indentation stack over those lines' leading whitespace (from ``ast``)."""
    lines = text.split("\n")
    starts = {}
    for node in ast.walk(ast.parse(text)):
        where = node.pattern if isinstance(node, ast.match_case) else node
        if isinstance(node, (ast.stmt, ast.match_case)):
            line = lines[where.lineno - 1]
            col = len(line.encode()[: where.col_offset].decode())
            if not line[:col].strip():
                starts[where.lineno] = len(line[:col].expandtabs(8))
    stack, levels = [0], {}
    for ln in sorted(starts):
        w = starts[ln]
        while w < stack[-1]:
            stack.pop()
        if w > stack[-1]:
            stack.append(w)
        levels[ln] = len(stack) - 1
    return levels


def inside(spans, rc) -> bool:
    i = bisect.bisect_right(spans, (rc, (1 << 30, 0))) - 1
    return i >= 0 and spans[i][0] <= rc < spans[i][1]


def check_text(task, b, split="train", seed=3):
    checked_indent = 0
    for i, (path, start) in enumerate(task.windows(len(b.tokens), seed, split)):
        text, ids, offsets = _encoded(task, path)
        T = task.n_ctx - 1
        assert b.tokens[i, 1:].tolist() == ids[start : start + T], "the window is the file's own tokens"
        if not path.endswith(".py"):
            assert not b.label_mask["indent"][i].any()
            continue
        line_start = [0] + [j + 1 for j, c in enumerate(text) if c == "\n"]
        strs, comments = tokenize_spans(text)
        levels = statement_line_levels(text)
        for p in range(T):
            a = anchor(text, *offsets[start + p])
            row = bisect.bisect_right(line_start, a)
            rc = (row, a - line_start[row - 1])
            assert b.labels["in_string"][i, p + 1] == inside(strs, rc), (path, rc)
            assert b.labels["in_comment"][i, p + 1] == inside(comments, rc), (path, rc)
            if row in levels and not inside(comments, rc):
                assert b.labels["indent"][i, p + 1] == levels[row], (path, rc)
                checked_indent += 1
    assert checked_indent > 0


CHECKS = {"induction": check_induction, "parens": check_parens, "gridworld": check_gridworld,
          "modular": check_modular, "text": check_text}


def test_every_task_has_an_independent_check():
    assert set(CHECKS) == set(pk.tasks.names())


def test_labels_match_an_independent_computation(task):
    b = task.batch(N, seed=3)
    CHECKS[task.name](task, b)
    if task.name == "text":
        assert b.labels["in_string"][b.label_mask["in_string"]].any()
        assert b.labels["indent"][b.label_mask["indent"]].max() >= 1


# ---------------------------------------------------------------- patching pairs


def pairs_induction(task, p):
    k = (p.clean.shape[1]) // 2
    for c, r, ans, wrong in zip(p.clean.tolist(), p.corrupt.tolist(), p.answers.tolist(), p.wrong.tolist()):
        A, B = c[1 : k + 1], r[1 : k + 1]
        assert c[0] == r[0] == task.bos and c[k + 1 :] == A[:-1] and r[k + 1 :] == A[:-1]
        assert ans == A[-1] and wrong == B[-1] and ans not in B
        # the last token of the prompt occurs once in the first copy: one token to copy
        assert A[:-1].count(c[-1]) == 1 and A[A.index(c[-1]) + 1] == ans


def pairs_parens(task, p):
    match = {"(": ")", "[": "]"}
    vocab = task.vocab()
    for c, r, ans, wrong in zip(p.clean, p.corrupt, p.answers.tolist(), p.wrong.tolist()):
        ends = []
        for row in (c, r):
            stack = []
            for s in strings(task, row)[1:]:
                if s in match:
                    stack.append(s)
                else:
                    assert match[stack.pop()] == s
            ends.append(match[stack[-1]])
        assert (vocab[ans], vocab[wrong]) == tuple(ends), "answer closes the clean prefix, wrong the corrupt one"
        assert int((c != r).sum()) == 1


def pairs_gridworld(task, p):
    names = task.vocab()
    for c, r, ans, wrong in zip(p.clean, p.corrupt, p.answers.tolist(), p.wrong.tolist()):
        (xc, yc), (xr, yr) = replay(task, c)[-1], replay(task, r)[-1]

        def legal(x, y, move):
            dx, dy = MOVES[names[move]]
            return 0 <= x + dx < task.size and 0 <= y + dy < task.size

        assert legal(xc, yc, ans) and not legal(xr, yr, ans)
        assert legal(xr, yr, wrong) and not legal(xc, yc, wrong)
        assert torch.equal(c[2:], r[2:]) and c[1] != r[1], "same moves, another start"


def pairs_modular(task, p):
    for c, r, ans, wrong in zip(p.clean, p.corrupt, p.answers.tolist(), p.wrong.tolist()):
        sc, sr = strings(task, c), strings(task, r)
        assert sc[2] == sr[2] == "+" and sc[4] == sr[4] == "=" and sc[3] == sr[3]
        assert task.vocab()[ans] == str((int(sc[1]) + int(sc[3])) % task.p)
        assert task.vocab()[wrong] == str((int(sr[1]) + int(sr[3])) % task.p)


PAIRS = {"induction": pairs_induction, "parens": pairs_parens, "gridworld": pairs_gridworld,
         "modular": pairs_modular, "text": pairs_induction}


def test_every_task_has_a_pairs_check():
    assert set(PAIRS) == set(pk.tasks.names())


def test_patching_pairs_are_correct(task):
    p = task.patching_pairs(6, seed=1)
    assert p.clean.shape == p.corrupt.shape and p.clean.shape[0] == 6
    assert p.answers.shape == p.wrong.shape == (6,)
    assert ((p.clean != p.corrupt).any(1)).all(), "each pair differs"
    assert (p.answers != p.wrong).all()
    assert int(max(p.clean.max(), p.corrupt.max())) < task.d_vocab
    assert p.clean.shape[1] <= task.n_ctx
    PAIRS[task.name](task, p)
