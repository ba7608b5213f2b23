"""What a task gives: vocabulary, training sequences, probe labels, patching pairs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from probekit.errors import ProbekitError
from probekit.tokenizer import SPECIALS, word_level_tokenizer

LabelKind = Literal["classification", "regression"]
ControlKey = Literal["token", "token_position"]


@dataclass(frozen=True, kw_only=True)
class LabelSpec:
    """A per-token probe target a task provides.

    Args:
        name: key in :attr:`TaskBatch.labels`.
        kind: classification (integer classes) or regression (float values).
        description: one line for ``probekit tasks``.
        classes: printable class names for classification labels, if known.
    """

    name: str
    kind: LabelKind
    description: str
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskBatch:
    """Sequences with per-token labels.

    Attributes:
        tokens: token ids, ``[batch, pos]``.
        mask: ``True`` at real (non-padded) positions, ``[batch, pos]``.
        labels: name -> ``[batch, pos]`` values (long for classification,
            float for regression).
        label_mask: name -> ``[batch, pos]``, ``True`` where that label is
            defined (e.g. only at the ``=`` token for ``modular``'s sum).
    """

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    labels: dict[str, Tensor] = field(default_factory=dict)
    label_mask: dict[str, Bool[Tensor, "batch pos"]] = field(default_factory=dict)


@dataclass(frozen=True)
class PatchingPairs:
    """Clean/corrupt prompts of equal shape with the answers read at the last position.

    ``answers`` is what the clean prompt should predict and ``wrong`` what the
    corrupt prompt leads to, so ``logits[:, -1, answers] - logits[:, -1, wrong]``
    is the usual logit difference.
    """

    clean: Int[Tensor, "batch pos"]
    corrupt: Int[Tensor, "batch pos"]
    answers: Int[Tensor, " batch"]
    wrong: Int[Tensor, " batch"]


class Task(ABC):
    """A source of token sequences with ground truth, deterministic from a seed.

    Subclasses set ``name``, ``description``, ``label_specs`` and
    ``control_key`` and implement :meth:`vocab`, :meth:`batch` and
    :meth:`patching_pairs`.
    """

    name: str
    description: str
    label_specs: tuple[LabelSpec, ...] = ()
    #: Hewitt & Liang control-task key: what the random control label is a function of.
    control_key: ControlKey = "token"
    #: default model shape for ``probekit train --task``: overrides of ModelConfig fields.
    default_model: dict = {}
    #: default training settings for this task: overrides of TrainConfig fields.
    default_training: dict = {}

    @abstractmethod
    def vocab(self) -> list[str]:
        """Token strings, index = token id; starts with ``<bos>``, ``<pad>``, ``<unk>``."""

    @property
    def n_ctx(self) -> int:
        """Length of the sequences :meth:`batch` returns."""
        return self.seq_len

    seq_len: int = 64

    @property
    def d_vocab(self) -> int:
        return len(self.vocab())

    @property
    def bos(self) -> int:
        return 0

    @property
    def pad(self) -> int:
        return 1

    def tokenizer(self):
        """A Hugging Face tokenizer over :meth:`vocab` (saved with run directories)."""
        return word_level_tokenizer(self.vocab())

    @abstractmethod
    def batch(self, n: int, seed: int, split: Literal["train", "test"] = "train") -> TaskBatch:
        """``n`` sequences with labels; the same ``(n, seed, split)`` gives the same batch."""

    @abstractmethod
    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        """``n`` clean/corrupt prompt pairs with answer tokens."""

    def target_mask(self, tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
        """Positions whose next-token prediction counts in the training loss (default: all)."""
        return torch.ones_like(tokens, dtype=torch.bool)

    def label(self, name: str) -> LabelSpec:
        """The :class:`LabelSpec` called ``name``; a clear error naming the valid ones otherwise."""
        for spec in self.label_specs:
            if spec.name == name:
                return spec
        from probekit.errors import unknown

        raise unknown(f"label of task {self.name!r}", name, [s.name for s in self.label_specs])

    def to_dict(self) -> dict:
        """The task's parameters (saved in run directories and store manifests)."""
        return {"name": self.name, **self.params()}

    def params(self) -> dict:
        return {}


def generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and the salts (e.g. a split id)."""
    g = torch.Generator()
    s = seed
    for x in salt:
        s = (s * 1_000_003 + x) % (2**63 - 1)
    g.manual_seed(s)
    return g


def specials_then(tokens: list[str]) -> list[str]:
    """The vocabulary ``<bos> <pad> <unk>`` followed by ``tokens``."""
    clash = set(tokens) & set(SPECIALS)
    if clash:
        raise ProbekitError(f"task tokens clash with special tokens: {sorted(clash)}")
    return [*SPECIALS, *tokens]


SPLITS = {"train": 0, "test": 1}


def split_id(split: str) -> int:
    if split not in SPLITS:
        raise ProbekitError(f"split must be 'train' or 'test', got {split!r}")
    return SPLITS[split]
