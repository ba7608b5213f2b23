"""One store of per-token activations with aligned labels, in memory or on disk.

A *row* is one (example, position) of the cached data; every hook's tensor,
every label and the row index (example id, position, token id) share the row
axis. Padded positions are never rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from probekit.errors import ProbekitError, unknown
from probekit.hooks import HookRef, layer_label, resolve


@dataclass
class ActivationStore:
    """Per-token activations of some hooks, with labels and row ids.

    Attributes:
        acts: hook name -> ``[rows, ...]`` (``[rows, d_model]`` for residual
            hooks, ``[rows, n_heads, d_head]`` for ``attn.hook_z``).
        example_id, position, token: ``[rows]`` long tensors.
        labels: label name -> ``[rows]`` values (long for classification,
            float for regression).
        label_mask: label name -> ``[rows]`` bool, where that label is defined.
        label_kinds: label name -> ``"classification"`` or ``"regression"``.
        manifest: provenance: model source and fingerprint, task or data,
            hooks, shapes, versions. Sweeps use it to rebuild the model.
    """

    acts: dict[str, Tensor]
    example_id: Tensor
    position: Tensor
    token: Tensor
    labels: dict[str, Tensor] = field(default_factory=dict)
    label_mask: dict[str, Tensor] = field(default_factory=dict)
    label_kinds: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.example_id)
        for name, t in [*self.acts.items(), ("position", self.position), ("token", self.token),
                        *self.labels.items(), *self.label_mask.items()]:
            if t.shape[0] != n:
                raise ProbekitError(f"store column {name!r} has {t.shape[0]} rows, expected {n}")
        for name in self.labels:
            self.label_mask.setdefault(name, torch.ones(n, dtype=torch.bool))

    # -- shape ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.example_id)

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    @property
    def n_layers(self) -> int:
        """The model's number of blocks (from the manifest)."""
        return int(self.manifest.get("n_layers", 0))

    def layers(self) -> list[str]:
        """Labels of the residual-stream layers present, in depth order (``embed``, ``L0``, …)."""
        order = ["embed"] + [f"L{i}" for i in range(self.n_layers)]
        have = {layer_label(h) for h in self.acts}
        return [lab for lab in order if lab in have]

    # -- access --------------------------------------------------------------
    def ref(self, spec: str | int, hook: str = "resid_post") -> HookRef:
        """Resolve a layer address against what this store holds."""
        ref = resolve(spec, max(self.n_layers, 1), self.manifest.get("n_heads"), hook=hook)
        if ref.name not in self.acts:
            raise unknown("layer of this store", str(spec), [*self.layers(), *self.acts])
        return ref

    def layer(self, spec: str | int, hook: str = "resid_post") -> Tensor:
        """``[rows, d]`` activations of one layer (``embed``, ``L3``, ``L1H2``, an int or a hook name)."""
        ref = self.ref(spec, hook)
        x = self.acts[ref.name]
        if ref.head is not None:
            x = x[:, ref.head]
        return x.reshape(len(self), -1)

    def stack(self, specs: list[str] | None = None) -> Tensor:
        """``[layer, rows, d]``: the given layers (default: every residual layer) stacked."""
        specs = specs or self.layers()
        return torch.stack([self.layer(s) for s in specs])

    def label(self, name: str) -> tuple[Tensor, Tensor]:
        """(values, defined-mask) of a label, both ``[rows]``."""
        if name not in self.labels:
            raise unknown("label", name, self.labels)
        return self.labels[name], self.label_mask[name]

    def iter_batches(self, specs: list[str], batch_rows: int) -> Iterator[tuple[slice, dict[str, Tensor]]]:
        """Stream ``(rows slice, {spec: [b, d]})`` batches, for stores larger than memory."""
        for start in range(0, len(self), batch_rows):
            sl = slice(start, min(start + batch_rows, len(self)))
            yield sl, {s: self.layer(s)[sl] for s in specs}

    def to_dict(self) -> dict[str, Any]:
        return {"rows": len(self), "hooks": self.hooks, "labels": dict(self.label_kinds), **self.manifest}
