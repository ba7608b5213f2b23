"""Text: real-text language modelling on local files with a locally trained byte-level BPE.

The default corpus is the Python standard library's own source, which every
machine running probekit has. The tokenizer is a byte-level BPE (as GPT-2's,
Radford et al. 2019; BPE after Sennrich et al. 2016) trained here with the
``tokenizers`` library, so nothing is downloaded. Per-token probe labels come
from Python's own :mod:`tokenize` module run on the source and aligned to the
BPE tokens through their character offsets.
"""

from __future__ import annotations

import io
import logging
import os
import tokenize
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from probekit.errors import ProbekitError
from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch, generator, split_id
from probekit.tokenizer import BOS, PAD, SPECIALS, UNK

log = logging.getLogger(__name__)

#: code points below 0x3100 that ``str.isspace`` calls whitespace (covers all of Unicode's).
_SPACE_CODEPOINTS = np.array([c for c in range(0x3100) if chr(c).isspace()], dtype=np.uint32)


def default_corpus(max_bytes: int = 1_000_000, max_file_bytes: int = 100_000) -> list[Path]:
    """The default corpus: sorted top-level ``*.py`` files of the standard library, up to ``max_bytes``.

    Files larger than ``max_file_bytes`` are skipped so that no single module dominates.
    """
    root = Path(os.path.dirname(os.__file__))
    out, total = [], 0
    for p in sorted(root.glob("*.py")):
        size = p.stat().st_size
        if size > max_file_bytes or size == 0:
            continue
        if total + size > max_bytes:
            break
        out.append(p)
        total += size
    return out


def read_text(path: str | Path) -> str:
    """A file's text as probekit reads it: UTF-8 (bad bytes replaced), universal newlines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on ``texts``; ``<bos> <pad> <unk>`` get ids 0, 1, 2.

    Deterministic: the same texts in the same order give the same merges.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return tok


def wrap_bpe(tok: Tokenizer, name: str = "probekit-bpe") -> PreTrainedTokenizerFast:
    """Wrap a trained BPE as a Hugging Face fast tokenizer that prepends ``<bos>``.

    As :func:`probekit.tokenizer.word_level_tokenizer`: eos = pad so that
    TransformerLens does not grow the vocabulary, ``add_bos_token=True`` and a
    ``name_or_path`` so that ``boot_native(tokenizer=...)`` keeps it as is.
    """
    special = {"bos_token": BOS, "pad_token": PAD, "eos_token": PAD, "unk_token": UNK}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.to_str()), add_bos_token=True, name_or_path=name, **special
    )
    fast.padding_side = "right"
    return fast


def _byte_decoder() -> dict[str, int]:
    # GPT-2's bytes_to_unicode, inverted: which byte each printable stand-in character means.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def printable(token: str, decoder: dict[str, int]) -> str:
    """The text a byte-level token stands for; bytes that are not whole UTF-8 characters as ``<0xAB>``."""
    raw = bytes(decoder[c] for c in token)
    s = raw.decode("utf-8", errors="surrogateescape")
    return "".join(f"<0x{ord(c) - 0xDC00:02X}>" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in s)


def python_char_labels(text: str) -> dict[str, np.ndarray] | None:
    """Per-character ``in_string``, ``in_comment`` and ``indent`` of Python source, from :mod:`tokenize`.

    ``indent`` is the indentation level (INDENT minus DEDENT tokens so far) of
    the token a character belongs to; characters between tokens take the
    level of the next token. F-strings count as strings as a whole (also on
    Python 3.12+, where tokenize splits them). ``None`` if ``text`` does not
    tokenize as Python.
    """
    n = len(text)
    line_start = np.concatenate([[0, 0], np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), np.uint32) == 10) + 1])
    in_string = np.zeros(n, np.int64)
    in_comment = np.zeros(n, np.int64)
    indent = np.full(n, -1, np.int64)
    level = 0
    fstring_starts: list[int] = []
    fs_start = getattr(tokenize, "FSTRING_START", None)
    fs_end = getattr(tokenize, "FSTRING_END", None)
    try:
        for t in tokenize.generate_tokens(io.StringIO(text).readline):
            if t.type == tokenize.INDENT:
                level += 1
            elif t.type == tokenize.DEDENT:
                level -= 1
                continue
            if t.type == tokenize.ENDMARKER:
                break
            s = int(line_start[t.start[0]]) + t.start[1]
            e = int(line_start[t.end[0]]) + t.end[1]
            if t.type == tokenize.STRING:
                in_string[s:e] = 1
            elif t.type == tokenize.COMMENT:
                in_comment[s:e] = 1
            elif t.type == fs_start:
                fstring_starts.append(s)
            elif t.type == fs_end:
                in_string[fstring_starts.pop() : e] = 1
            indent[s:e] = level
    except (tokenize.TokenError, SyntaxError):
        return None
    # characters between tokens take the level of the next token (end of file: the last level)
    idx = np.where(indent >= 0, np.arange(n), n)
    nxt = np.minimum.accumulate(idx[::-1])[::-1]
    filled = np.append(indent, max(level, 0))[nxt]
    return {"in_string": in_string, "in_comment": in_comment, "indent": filled}


def anchors(text: str, offsets: np.ndarray) -> np.ndarray:
    """For each token's ``[start, end)`` character span, its first non-whitespace character (else ``start``)."""
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    n = len(cps)
    idx = np.where(np.isin(cps, _SPACE_CODEPOINTS), n, np.arange(n))
    nxt = np.append(np.minimum.accumulate(idx[::-1])[::-1], n)
    start, end = offsets[:, 0], offsets[:, 1]
    first = nxt[np.minimum(start, n)]
    return np.where(first < end, first, start)


@dataclass
class _Doc:
    """A token range ``[start, stop)`` of one file."""

    path: str
    file: int
    ids: np.ndarray
    start: int
    stop: int


LABELS = ("indent", "in_string", "in_comment")


class _Corpus:
    """Files, a BPE trained on the training files, every file encoded; labels computed on first use."""

    def __init__(self, paths: list[Path], vocab_size: int, test_fraction: float):
        self.paths = paths
        self.texts = [read_text(p) for p in paths]
        names = [str(p) for p in paths]
        # split by file: the files with the lowest crc32 of their name are held out
        order = sorted(range(len(paths)), key=lambda i: (zlib.crc32(paths[i].name.encode()), names[i]))
        n_test = max(1, round(test_fraction * len(paths))) if len(paths) >= 2 else 0
        test_files = set(order[:n_test])
        train_texts = [t for i, t in enumerate(self.texts) if i not in test_files]
        self.bpe = train_bpe(train_texts, vocab_size)
        log.info("trained a byte-level BPE of %d tokens on %d files (%d characters)", self.bpe.get_vocab_size(),
                 len(train_texts), sum(map(len, train_texts)))
        self.fast = wrap_bpe(self.bpe)
        decoder = _byte_decoder()
        vocab = self.bpe.get_vocab()
        self.vocab = [t if t in SPECIALS else printable(t, decoder) for t in sorted(vocab, key=vocab.get)]
        self.offsets: list[np.ndarray] = []
        self._labels: dict[int, tuple[dict[str, np.ndarray], bool]] = {}
        self.splits: dict[str, list[_Doc]] = {"train": [], "test": []}
        for i, enc in enumerate(self.bpe.encode_batch(self.texts, add_special_tokens=False)):
            ids = np.array(enc.ids, dtype=np.int64)
            self.offsets.append(np.array(enc.offsets, dtype=np.int64).reshape(-1, 2))
            if len(paths) == 1:  # a single file: its last tokens are the test split
                cut = int(len(ids) * (1 - test_fraction))
                self.splits["train"].append(_Doc(names[i], i, ids, 0, cut))
                self.splits["test"].append(_Doc(names[i], i, ids, cut, len(ids)))
            else:
                self.splits["test" if i in test_files else "train"].append(_Doc(names[i], i, ids, 0, len(ids)))

    def labels(self, i: int) -> tuple[dict[str, np.ndarray], bool]:
        """Per-token labels of file ``i`` and whether they are defined (the file tokenizes as Python)."""
        if i not in self._labels:
            text, offsets = self.texts[i], self.offsets[i]
            chars = python_char_labels(text) if self.paths[i].suffix == ".py" else None
            if chars is None:
                self._labels[i] = ({k: np.zeros(len(offsets), np.int64) for k in LABELS}, False)
            else:
                at = np.minimum(anchors(text, offsets), max(len(text) - 1, 0))
                self._labels[i] = ({k: chars[k][at] for k in LABELS}, True)
        return self._labels[i]


_CORPORA: dict[tuple, _Corpus] = {}


def _corpus(paths: list[Path], vocab_size: int, test_fraction: float) -> _Corpus:
    """The corpus for these files, trained once per process (keyed by path, size and mtime)."""
    key = (tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths), vocab_size, test_fraction)
    if key not in _CORPORA:
        _CORPORA[key] = _Corpus(paths, vocab_size, test_fraction)
    return _CORPORA[key]


class Text(Task):
    """Windows of real text from local files, tokenized by a locally trained byte-level BPE.

    Args:
        paths: text files or directories (searched for ``*.py`` and ``*.txt``);
            ``None`` for the default corpus (the standard library's source, see
            :func:`default_corpus`).
        vocab_size: BPE vocabulary size, specials included.
        seq_len: length of a sequence: ``<bos>`` and ``seq_len - 1`` tokens of one file.
        max_bytes: size of the default corpus.
        test_fraction: fraction of files held out as the test split (a
            single file: its last tokens).
        pair_len: length of the repeated window in :meth:`patching_pairs`.

    Labels (per token, read at its first non-whitespace character; defined on
    files that tokenize as Python):
        ``indent``: indentation level of the token's line.
        ``in_string``: the token is inside a string literal.
        ``in_comment``: the token is inside a comment.

    Patching pairs: induction on natural text — clean ``<bos> A A[:-1]`` with
    ``A`` a window of real text (answer ``A[-1]``), corrupt ``<bos> B A[:-1]``
    with ``B`` another window that does not contain the answer (``wrong =
    B[-1]``).

    Example:
        >>> task = Text(vocab_size=512)
        >>> task.batch(2, seed=0).tokens.shape
        torch.Size([2, 64])
    """

    name = "text"
    description = "windows of local text files (default: the Python stdlib's source), byte-level BPE"
    label_specs = (
        LabelSpec(name="indent", kind="classification", description="indentation level of the token's line"),
        LabelSpec(name="in_string", kind="classification", description="token is inside a string literal",
                  classes=("no", "yes")),
        LabelSpec(name="in_comment", kind="classification", description="token is inside a comment",
                  classes=("no", "yes")),
    )
    control_key = "token"
    default_model = {"n_layers": 2, "d_model": 128, "n_heads": 4, "n_ctx": 64}
    default_training = {"steps": 2000, "lr": 1e-3, "batch_size": 32, "weight_decay": 0.01}

    def __init__(
        self,
        paths: list[str] | None = None,
        vocab_size: int = 1024,
        seq_len: int = 64,
        max_bytes: int = 1_000_000,
        test_fraction: float = 0.1,
        pair_len: int = 10,
    ):
        if vocab_size < 256 + len(SPECIALS):
            raise ProbekitError(f"vocab_size must be at least {256 + len(SPECIALS)} (bytes + specials), got {vocab_size}")
        if seq_len < 2:
            raise ProbekitError(f"seq_len must be at least 2, got {seq_len}")
        if not 0 < test_fraction < 1:
            raise ProbekitError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        if pair_len < 2:
            raise ProbekitError(f"pair_len must be at least 2, got {pair_len}")
        self.paths = None if paths is None else [str(p) for p in paths]
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.max_bytes = max_bytes
        self.test_fraction = test_fraction
        self.pair_len = pair_len
        files = default_corpus(max_bytes) if paths is None else self._files(paths)
        self._corpus = _corpus(files, vocab_size, test_fraction)
        for split, docs in self._corpus.splits.items():
            if not any(d.stop - d.start >= seq_len - 1 for d in docs):
                raise ProbekitError(f"no {split} file has {seq_len - 1} tokens; give more text or a shorter seq_len")

    @staticmethod
    def _files(paths: list[str]) -> list[Path]:
        out: list[Path] = []
        for p in map(Path, paths):
            if p.is_dir():
                out += sorted(q for q in p.rglob("*") if q.suffix in (".py", ".txt") and q.is_file())
            elif p.is_file():
                out.append(p)
            else:
                raise ProbekitError(f"text file not found: {p}")
        if not out:
            raise ProbekitError(f"no .py or .txt files in {paths}")
        return list(dict.fromkeys(p.resolve() for p in out))

    def params(self) -> dict:
        return {"paths": self.paths, "vocab_size": self.vocab_size, "seq_len": self.seq_len,
                "max_bytes": self.max_bytes, "test_fraction": self.test_fraction, "pair_len": self.pair_len}

    def vocab(self) -> list[str]:
        return list(self._corpus.vocab)

    @property
    def d_vocab(self) -> int:
        return len(self._corpus.vocab)

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The trained byte-level BPE as a Hugging Face fast tokenizer (prepends ``<bos>``)."""
        return self._corpus.fast

    def files(self, split: Literal["train", "test"]) -> list[str]:
        """The files (or file ranges) of a split."""
        return [d.path for d in self._corpus.splits[self._split(split)]]

    @staticmethod
    def _split(split: str) -> str:
        split_id(split)
        return split

    def windows(self, n: int, seed: int, split: Literal["train", "test"] = "train", length: int | None = None,
                salt: int = 43) -> list[tuple[str, int]]:
        """Where :meth:`batch` takes its windows from: ``(file, index of the first token)`` per sequence.

        The index is into the file's BPE tokens (``tokenizer()(text, add_special_tokens=False)``).
        """
        L = self.seq_len - 1 if length is None else length
        docs = [d for d in self._corpus.splits[self._split(split)] if d.stop - d.start >= L]
        counts = np.array([d.stop - d.start - L + 1 for d in docs], dtype=np.int64)
        cum = np.cumsum(counts)
        g = generator(seed, split_id(split), salt)
        # uniform over every window start in the split, drawn as floats to reach past 2**31
        r = (torch.rand(n, generator=g, dtype=torch.float64).numpy() * cum[-1]).astype(np.int64)
        which = np.searchsorted(cum, r, side="right")
        return [(docs[w].path, docs[w].start + int(x - (cum[w] - counts[w]))) for w, x in zip(which, r)]

    def _doc(self, path: str, split: str) -> _Doc:
        return next(d for d in self._corpus.splits[split] if d.path == path)

    def batch(self, n: int, seed: int, split: Literal["train", "test"] = "train") -> TaskBatch:
        T = self.seq_len
        tokens = torch.full((n, T), self.bos, dtype=torch.long)
        labels = {k: torch.zeros(n, T, dtype=torch.long) for k in LABELS}
        lmask = torch.zeros(n, T, dtype=torch.bool)
        for i, (path, start) in enumerate(self.windows(n, seed, split)):
            doc = self._doc(path, split)
            tokens[i, 1:] = torch.from_numpy(doc.ids[start : start + T - 1])
            file_labels, defined = self._corpus.labels(doc.file)
            for k in LABELS:
                labels[k][i, 1:] = torch.from_numpy(file_labels[k][start : start + T - 1])
            lmask[i, 1:] = defined
        return TaskBatch(tokens=tokens, mask=torch.ones(n, T, dtype=torch.bool), labels=labels,
                         label_mask={k: lmask.clone() for k in LABELS})

    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        k = self.pair_len
        clean, corrupt = [], []
        for attempt in range(50):
            wins = self.windows(8 * n, seed + attempt * 1_000_003, "test", length=k, salt=47)
            ids = [self._doc(p, "test").ids[s : s + k] for p, s in wins]
            for a, b in zip(ids[0::2], ids[1::2]):
                # the answer must not appear in B; the last prompt token must occur once in A[:-1]
                # (one place to copy from) and the wrong token must not appear in A
                if a[-1] in b or b[-1] in a or (a[:-1] == a[-2]).sum() != 1:
                    continue
                a, b = torch.from_numpy(a), torch.from_numpy(b)
                clean.append(torch.cat([torch.tensor([self.bos]), a, a[:-1]]))
                corrupt.append(torch.cat([torch.tensor([self.bos]), b, a[:-1]]))
                if len(clean) == n:
                    clean_t, corrupt_t = torch.stack(clean), torch.stack(corrupt)
                    return PatchingPairs(clean=clean_t, corrupt=corrupt_t, answers=clean_t[:, k], wrong=corrupt_t[:, k])
        raise ProbekitError(f"could not find {n} induction pairs of length {k} in the test files; give more text")
