"""The user's own data: texts with sequence, word or span labels, aligned to any fast tokenizer.

One example per JSONL line (or CSV row) with a ``text`` and its labels:

- a sequence label: any scalar field (``{"text": "...", "sentiment": "pos"}``),
  attached to the last real token (or the first, for encoders with ``[CLS]``);
- word labels: a list per word (``{"text": "the cat sat", "words": ["the",
  "cat", "sat"], "pos": ["DET", "NOUN", "VERB"]}``; without ``words`` the
  text's whitespace split);
- span labels: a list of ``{"start": 0, "end": 3, "label": "DET"}`` character
  spans under any field name; ``label`` names the label after the field
  (``spans``), any other key names its own label.

Token labels reach tokens through the tokenizer's character offsets
(``return_offsets_mapping``): a token gets the label of the word or span its
first non-whitespace character falls in; tokens outside every labelled word or
span, and special tokens, are undefined (``label_mask`` False). String labels
become classes (sorted), numeric ones regression targets. Texts of different
lengths are padded; ``TaskBatch.mask`` is False at padding, so padded
positions are never cached.

Example:
    >>> from probekit.tokenizer import word_level_tokenizer
    >>> tok = word_level_tokenizer(["<bos>", "<pad>", "<unk>", "the", "cat"])
    >>> data = load_data("pos.jsonl", tok)          # doctest: +SKIP
    >>> data.batch(data.n_examples, seed=0).labels["pos"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from probekit.errors import ProbekitError
from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch, split_id

log = logging.getLogger(__name__)

SequencePosition = Literal["last", "first"]
_RESERVED = ("text", "words")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class _Example:
    """One parsed example: its text and labels by level."""

    line: int
    text: str
    sequence: dict[str, Any] = field(default_factory=dict)
    #: name -> [(start, end, value)] character spans (words become spans too)
    spans: dict[str, list[tuple[int, int, Any]]] = field(default_factory=dict)


def _records(path: Path) -> list[tuple[int, dict]]:
    """``(line number, record)`` pairs of a JSONL or CSV file."""
    if not path.is_file():
        raise ProbekitError(f"data file not found: {path}")
    out: list[tuple[int, dict]] = []
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if reader.fieldnames is None:
                raise ProbekitError(f"{path}: no examples (empty file)")
            for row in reader:
                line = reader.line_num
                out.append((line, {k: (v or None) if k == "text" else _csv_value(v, path, line, numbers=k != "words")
                                   for k, v in row.items()}))
    else:
        with open(path, encoding="utf-8-sig") as f:
            for i, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ProbekitError(f"{path}:{i}: bad JSON: {e.msg} (column {e.colno})") from None
                if not isinstance(rec, dict):
                    raise ProbekitError(f"{path}:{i}: expected a JSON object per line, got {type(rec).__name__}")
                out.append((i, rec))
    if not out:
        raise ProbekitError(f"{path}: no examples (empty file)")
    return out


def _csv_value(v: str | None, path: Path, line: int, numbers: bool = True) -> Any:
    """A CSV cell: JSON for lists and objects, numbers for numerals, None when empty.

    ``numbers=False`` (the ``words`` column) keeps numerals and non-JSON brackets as text.
    """
    if v is None or v == "":
        return None
    s = v.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            if not numbers:  # words: a plain string that happens to start with a bracket
                return v
            raise ProbekitError(f"{path}:{line}: bad JSON in a cell: {e.msg}") from None
    if numbers and _NUMBER.fullmatch(s):
        return float(s) if any(c in s for c in ".eE") else int(s)
    return v


def _word_spans(text: str, words: list[str], where: str) -> list[tuple[int, int]]:
    """Character spans of ``words`` in ``text``, in order, separated only by whitespace."""
    spans, pos = [], 0
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w:
            raise ProbekitError(f"{where}: word {i} must be a non-empty string, got {w!r}")
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith(w, pos):
            raise ProbekitError(f"{where}: word {i} {w!r} does not match the text at character {pos} ({text[pos:pos + 20]!r})")
        spans.append((pos, pos + len(w)))
        pos += len(w)
    return spans


def _parse(rec: dict, line: int, path: Path) -> _Example:
    where = f"{path}:{line}"
    text = rec.get("text")
    if text is None:
        raise ProbekitError(f"{where}: missing field 'text'")
    if not isinstance(text, str) or not text.strip():
        raise ProbekitError(f"{where}: 'text' must be a non-empty string, got {text!r}")
    ex = _Example(line=line, text=text)
    words = rec.get("words")
    if isinstance(words, str):  # e.g. a CSV cell: the words separated by whitespace
        words = words.split()
    if words is not None and not isinstance(words, list):
        raise ProbekitError(f"{where}: 'words' must be a list of strings, got {type(words).__name__}")
    word_spans = None
    for key, value in rec.items():
        if key in _RESERVED:
            continue
        if isinstance(value, list) and not value:
            ex.spans[key] = []  # a span list with no spans in this example
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for s in value:
                start, end = s.get("start"), s.get("end")
                if not isinstance(start, int) or not isinstance(end, int):
                    raise ProbekitError(f"{where}: span {s} of {key!r} needs integer 'start' and 'end'")
                if not 0 <= start < end <= len(text):
                    raise ProbekitError(f"{where}: span {start}-{end} of {key!r} is outside the text (length {len(text)})")
                names = [k for k in s if k not in ("start", "end")]
                if not names:
                    raise ProbekitError(f"{where}: span {s} of {key!r} has no label (give 'label')")
                for k in names:
                    ex.spans.setdefault(key if k == "label" else k, []).append((start, end, s[k]))
        elif isinstance(value, list):
            if word_spans is None:
                word_spans = _word_spans(text, words if words is not None else text.split(), where)
            if len(value) != len(word_spans):
                raise ProbekitError(f"{where}: {key!r} has {len(value)} labels for {len(word_spans)} words")
            ex.spans[key] = [(a, b, v) for (a, b), v in zip(word_spans, value)]
        elif value is None or isinstance(value, (str, int, float, bool)):
            ex.sequence[key] = value
        else:
            raise ProbekitError(f"{where}: field {key!r} must be a label, a list of labels or a list of spans")
    if words is not None and word_spans is None:
        _word_spans(text, words, where)  # words given without labels still have to match
    return ex


def _schema(examples: list[_Example], path: Path) -> dict[str, tuple[str, LabelSpec]]:
    """Label name -> (level, spec), the same for every example."""
    first = examples[0]
    levels = {**{k: "sequence" for k in first.sequence}, **{k: "token" for k in first.spans}}
    if not levels:
        raise ProbekitError(f"{path}:{first.line}: no labels (give a label field besides 'text')")
    values: dict[str, list[tuple[int, Any]]] = {k: [] for k in levels}
    for ex in examples:
        have = {**{k: "sequence" for k in ex.sequence}, **{k: "token" for k in ex.spans}}
        for k, level in levels.items():
            if k not in have:
                raise ProbekitError(f"{path}:{ex.line}: missing field {k!r}")
            if have[k] != level:
                raise ProbekitError(f"{path}:{ex.line}: {k!r} is a {have[k]} label here but a {level} label on line {first.line}")
        extra = set(have) - set(levels)
        if extra:
            raise ProbekitError(f"{path}:{ex.line}: field {sorted(extra)[0]!r} is not on line {first.line}")
        for k in levels:
            vs = [ex.sequence[k]] if levels[k] == "sequence" else [v for _, _, v in ex.spans[k]]
            values[k] += [(ex.line, v) for v in vs if v is not None]
    out = {}
    for k, level in levels.items():
        kinds = {("text" if isinstance(v, (str, bool)) else "number") for _, v in values[k]}
        if len(kinds) > 1:
            line = next(ln for ln, v in values[k] if isinstance(v, (int, float)) and not isinstance(v, bool))
            raise ProbekitError(f"{path}:{line}: label {k!r} mixes strings and numbers")
        if kinds == {"number"}:
            bad = next((ln for ln, v in values[k] if not math.isfinite(v)), None)
            if bad is not None:
                raise ProbekitError(f"{path}:{bad}: label {k!r} is not a finite number")
            spec = LabelSpec(name=k, kind="regression", description=f"{level} label from {path.name}")
        else:
            classes = tuple(sorted({str(v) for _, v in values[k]}))
            spec = LabelSpec(name=k, kind="classification", description=f"{level} label from {path.name}", classes=classes)
        out[k] = (level, spec)
    return out


def _anchor(text: str, start: int, end: int) -> int:
    """The first non-whitespace character of ``text[start:end]``, else ``start``."""
    for i in range(start, end):
        if not text[i].isspace():
            return i
    return start


class UserData(Task):
    """A user's labelled texts, tokenized, usable wherever a task is (caching, probing).

    User data is one fixed, ordered set of examples: :meth:`batch` returns the
    first ``n`` examples in file order for any seed and split (example ids are
    file order; probes split the cached rows by example).

    Args:
        path: a ``.jsonl`` (one JSON object per line) or ``.csv``/``.tsv`` file.
        tokenizer: any Hugging Face fast tokenizer (offsets are needed).
        max_len: longest tokenized example (longer ones are truncated).
        sequence_position: which token carries sequence labels: the last real
            one, or the first (``[CLS]`` of BERT-style encoders).
    """

    name = "data"
    description = "the user's own labelled texts"
    control_key = "token"

    def __init__(self, path: str | Path, tokenizer, *, max_len: int | None = None,
                 sequence_position: SequencePosition = "last"):
        if sequence_position not in ("last", "first"):
            raise ProbekitError(f"sequence_position must be 'last' or 'first', got {sequence_position!r}")
        if max_len is not None and max_len < 1:
            raise ProbekitError(f"max_len must be at least 1, got {max_len}")
        if not getattr(tokenizer, "is_fast", False):
            raise ProbekitError(f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; character offsets are needed")
        self.path = Path(path)
        self.max_len = max_len
        self.sequence_position = sequence_position
        self._tok = tokenizer
        examples = [_parse(rec, line, self.path) for line, rec in _records(self.path)]
        schema = _schema(examples, self.path)
        self.label_specs = tuple(spec for _, spec in schema.values())
        self.texts = [ex.text for ex in examples]
        self.lines = [ex.line for ex in examples]
        self._encode(examples, schema)

    def _encode(self, examples: list[_Example], schema: dict[str, tuple[str, LabelSpec]]) -> None:
        """Tokenize every example and align its labels to tokens."""
        enc = self._tok(self.texts, return_offsets_mapping=True, return_special_tokens_mask=True,
                        truncation=self.max_len is not None, max_length=self.max_len)
        self._ids: list[list[int]] = []
        self._labels: dict[str, list[np.ndarray]] = {k: [] for k in schema}
        self._defined: dict[str, list[np.ndarray]] = {k: [] for k in schema}
        for i, ex in enumerate(examples):
            ids, offsets, special = enc["input_ids"][i], enc["offset_mapping"][i], enc["special_tokens_mask"][i]
            if not ids:
                raise ProbekitError(f"{self.path}:{ex.line}: the text has no tokens")
            T = len(ids)
            # each token is read at its first non-whitespace character; special tokens at none (-1)
            anchor = np.array([-1 if special[t] or offsets[t][0] >= offsets[t][1] else _anchor(ex.text, *offsets[t])
                               for t in range(T)], dtype=np.int64)
            for k, (level, spec) in schema.items():
                vals = np.zeros(T, np.float64)
                defined = np.zeros(T, bool)
                if level == "sequence":
                    v = ex.sequence[k]
                    if v is not None:
                        p = T - 1 if self.sequence_position == "last" else 0
                        vals[p], defined[p] = self._value(spec, v), True
                else:
                    spans = [(a, b, v) for a, b, v in ex.spans[k] if v is not None]
                    if spans:
                        starts = np.array([a for a, _, _ in spans])
                        ends = np.array([b for _, b, _ in spans])
                        hit = (starts <= anchor[:, None]) & (anchor[:, None] < ends) & (anchor[:, None] >= 0)
                        defined = hit.any(1)
                        values = np.array([self._value(spec, v) for _, _, v in spans])
                        vals[defined] = values[hit.argmax(1)[defined]]  # the first span given that holds the token
                self._labels[k].append(vals)
                self._defined[k].append(defined)
            self._ids.append(list(ids))

    @staticmethod
    def _value(spec: LabelSpec, v: Any) -> float:
        return float(v) if spec.kind == "regression" else float(spec.classes.index(str(v)))

    @property
    def n_examples(self) -> int:
        """Number of examples in the file."""
        return len(self._ids)

    @property
    def seq_len(self) -> int:  # type: ignore[override]
        """Length of the longest tokenized example."""
        return max(len(x) for x in self._ids)

    def vocab(self) -> list[str]:
        return self._tok.convert_ids_to_tokens(list(range(len(self._tok))))

    @property
    def d_vocab(self) -> int:
        return len(self._tok)

    @property
    def pad(self) -> int:
        for t in (self._tok.pad_token_id, self._tok.eos_token_id):
            if t is not None:
                return t
        return 0

    @property
    def bos(self) -> int:
        for t in (self._tok.bos_token_id, self._tok.cls_token_id):
            if t is not None:
                return t
        return 0

    def tokenizer(self):
        """The tokenizer the data was aligned with."""
        return self._tok

    def params(self) -> dict:
        return {"path": str(self.path), "max_len": self.max_len, "sequence_position": self.sequence_position,
                "tokenizer": getattr(self._tok, "name_or_path", None)}

    def batch(self, n: int, seed: int = 0, split: Literal["train", "test"] = "train") -> TaskBatch:
        """The first ``min(n, n_examples)`` examples, right-padded; ``seed`` and ``split`` do not change them."""
        split_id(split)
        if n < 1:
            raise ProbekitError(f"n must be at least 1, got {n}")
        if n > self.n_examples:
            log.info("%s has %d examples; using all of them (asked for %d)", self.path, self.n_examples, n)
            n = self.n_examples
        T = max(len(x) for x in self._ids[:n])
        tokens = torch.full((n, T), self.pad, dtype=torch.long)
        mask = torch.zeros(n, T, dtype=torch.bool)
        labels, label_mask = {}, {}
        for spec in self.label_specs:
            dtype = torch.float32 if spec.kind == "regression" else torch.long
            labels[spec.name] = torch.zeros(n, T, dtype=dtype)
            label_mask[spec.name] = torch.zeros(n, T, dtype=torch.bool)
        for i, ids in enumerate(self._ids[:n]):
            L = len(ids)
            tokens[i, :L] = torch.tensor(ids)
            mask[i, :L] = True
            for spec in self.label_specs:
                labels[spec.name][i, :L] = torch.from_numpy(self._labels[spec.name][i]).to(labels[spec.name].dtype)
                label_mask[spec.name][i, :L] = torch.from_numpy(self._defined[spec.name][i])
        return TaskBatch(tokens=tokens, mask=mask, labels=labels, label_mask=label_mask)

    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        raise ProbekitError(f"user data ({self.path}) has no clean/corrupt pairs; patching needs a built-in task")


def load_data(path: str | Path, tokenizer, *, max_len: int | None = None,
              sequence_position: SequencePosition = "last") -> UserData:
    """Load labelled texts from a JSONL or CSV file, aligned to ``tokenizer``.

    Args:
        path: ``.jsonl`` (one JSON object per line) or ``.csv``/``.tsv``.
        tokenizer: any Hugging Face fast tokenizer: an in-house word-level one,
            the ``text`` task's BPE, or a loaded checkpoint's (e.g. BERT WordPiece).
        max_len: truncate tokenized examples to this many tokens.
        sequence_position: ``"last"`` real token (causal LMs) or ``"first"``
            (``[CLS]`` of encoders) carries sequence labels.

    Returns:
        a :class:`UserData` task; bad data raises a one-line
        :class:`~probekit.errors.ProbekitError` naming the file and line.
    """
    return UserData(path, tokenizer, max_len=max_len, sequence_position=sequence_position)
