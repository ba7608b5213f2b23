"""Modular addition ``a + b mod p``: memorization versus generalization (grokking).

Power et al. 2022; Nanda et al. 2023 (the Fourier algorithm). The pairs are
split once, by ``data_seed``, into a training fraction and a held-out rest, so
train and test loss tell memorization from generalization.
"""

from __future__ import annotations

from typing import Literal

import torch

from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch, generator, specials_then, split_id


class Modular(Task):
    """Sequences ``<bos> a + b =`` followed by ``c = (a + b) mod p``; loss only on ``c``.

    Labels (defined at the ``=`` token): ``a``, ``b`` and ``sum`` (``c``).

    Patching pairs: ``a + b =`` versus ``a' + b =`` with a different sum;
    answer ``c``, wrong ``c'``.
    """

    name = "modular"
    description = "a + b mod p; memorization vs generalization (grokking)"
    control_key = "token"
    default_model = {"n_layers": 1, "d_model": 128, "n_heads": 4, "n_ctx": 6, "d_mlp": 512}
    default_training = {"steps": 3000, "lr": 1e-3, "batch_size": 256, "weight_decay": 1.0}

    def __init__(self, p: int = 53, train_fraction: float = 0.4, data_seed: int = 0):
        self.p = p
        self.train_fraction = train_fraction
        self.data_seed = data_seed
        self.seq_len = 6
        classes = tuple(str(i) for i in range(p))
        self.label_specs = (
            LabelSpec(name="a", kind="classification", description="first operand (at '=')", classes=classes),
            LabelSpec(name="b", kind="classification", description="second operand (at '=')", classes=classes),
            LabelSpec(name="sum", kind="classification", description="(a + b) mod p (at '=')", classes=classes),
        )
        perm = torch.randperm(p * p, generator=generator(data_seed, 31))
        k = int(round(train_fraction * p * p))
        self._pairs = {"train": perm[:k], "test": perm[k:]}

    def params(self) -> dict:
        return {"p": self.p, "train_fraction": self.train_fraction, "data_seed": self.data_seed}

    def vocab(self) -> list[str]:
        return specials_then([*(str(i) for i in range(self.p)), "+", "="])

    @property
    def plus(self) -> int:
        return 3 + self.p

    @property
    def equals(self) -> int:
        return 4 + self.p

    def _sequences(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        c = (a + b) % self.p
        cols = [torch.full((n,), self.bos), 3 + a, torch.full((n,), self.plus), 3 + b,
                torch.full((n,), self.equals), 3 + c]
        return torch.stack(cols, 1)

    def batch(self, n: int, seed: int, split: Literal["train", "test"] = "train") -> TaskBatch:
        g = generator(seed, split_id(split), 37)
        pool = self._pairs[split]
        idx = pool[torch.randint(0, len(pool), (n,), generator=g)]
        a, b = idx // self.p, idx % self.p
        tokens = self._sequences(a, b)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        at_eq = torch.zeros_like(mask)
        at_eq[:, 4] = True
        full = lambda v: v[:, None].expand(n, self.seq_len).clone()  # noqa: E731
        return TaskBatch(
            tokens=tokens, mask=mask,
            labels={"a": full(a), "b": full(b), "sum": full((a + b) % self.p)},
            label_mask={"a": at_eq, "b": at_eq, "sum": at_eq},
        )

    def target_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """Positions whose next-token prediction counts in the loss: only ``=`` → ``c``."""
        m = torch.zeros_like(tokens, dtype=torch.bool)
        m[:, 4] = True
        return m

    def all_pairs(self, split: Literal["train", "test"]) -> torch.Tensor:
        """Every sequence of a split, for exact train/test accuracy."""
        idx = self._pairs[split]
        return self._sequences(idx // self.p, idx % self.p)

    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        g = generator(seed, 7, 41)
        a = torch.randint(0, self.p, (n,), generator=g)
        b = torch.randint(0, self.p, (n,), generator=g)
        a2 = (a + torch.randint(1, self.p, (n,), generator=g)) % self.p
        clean = self._sequences(a, b)[:, :5]
        corrupt = self._sequences(a2, b)[:, :5]
        return PatchingPairs(clean=clean, corrupt=corrupt, answers=3 + (a + b) % self.p, wrong=3 + (a2 + b) % self.p)
