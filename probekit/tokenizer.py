"""Hugging Face tokenizers for in-house models.

Built-in tasks have small closed vocabularies; a word-level tokenizer over
them (tokens separated by spaces) lets TransformerLens' own tools
(``to_str_tokens``, ``to_tokens``, the head detector) work on models trained
here, and it saves as a standard ``tokenizer.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from probekit.errors import ProbekitError

BOS = "<bos>"
PAD = "<pad>"
UNK = "<unk>"
#: the special tokens every in-house vocabulary starts with (ids 0, 1, 2).
SPECIALS = (BOS, PAD, UNK)


def word_level_tokenizer(vocab: Sequence[str]) -> PreTrainedTokenizerFast:
    """A whitespace-split word-level tokenizer whose ids are positions in ``vocab``.

    Args:
        vocab: token strings, index = token id; must be unique, non-empty and
            free of whitespace, and contain the :data:`SPECIALS` ``<bos>``, ``<pad>``, ``<unk>``.

    Example:
        >>> tok = word_level_tokenizer(["<bos>", "<pad>", "<unk>", "(", ")"])
        >>> tok("( )")["input_ids"]
        [0, 3, 4]
    """
    if len(set(vocab)) != len(vocab):
        raise ProbekitError("tokenizer vocabulary has duplicate token strings")
    bad = [t for t in vocab if not t or any(c.isspace() for c in t)]
    if bad:
        raise ProbekitError(f"token strings may not be empty or contain whitespace: {bad[:3]!r}")
    missing = [t for t in SPECIALS if t not in vocab]
    if missing:
        raise ProbekitError(f"tokenizer vocabulary needs the tokens {missing!r}")
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordLevel(vocab=ids, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # eos = pad: TransformerLens adds an eos token to a tokenizer without one,
    # which would grow the vocabulary past the model's d_vocab.
    special = {"bos_token": BOS, "pad_token": PAD, "eos_token": PAD, "unk_token": UNK}
    # add_bos_token=True: TransformerLens re-loads a tokenizer without it by name.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, add_bos_token=True, name_or_path="probekit-word-level", **special
    )
    fast.padding_side = "right"
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`save_tokenizer` (a ``tokenizer.json`` directory)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise ProbekitError(f"no tokenizer.json in {path}")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | Path) -> None:
    """Save ``tokenizer`` in Hugging Face format (``tokenizer.json`` + configs) into ``path``."""
    tokenizer.save_pretrained(str(path))
