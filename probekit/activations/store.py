"""One store of per-token activations with aligned labels, in memory or on disk.

A *row* is one (example, position) of the cached data; every hook's tensor,
every label and the row index (example id, position, token id) share the row
axis. Padded positions are never rows.

An on-disk store (what ``cache_activations(..., out=DIR)`` writes, read back
with :meth:`ActivationStore.open`) keeps its activations in safetensors
shards: ``store.acts[hook]`` reads one hook from every shard into memory, and
:meth:`ActivationStore.iter_batches` streams row ranges without ever holding a
whole layer. The row index and labels are small and are held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from probekit.activations import disk
from probekit.errors import ProbekitError, unknown
from probekit.hooks import HookRef, layer_label, resolve


@dataclass
class ActivationStore:
    """Per-token activations of some hooks, with labels and row ids.

    Attributes:
        acts: hook name -> ``[rows, ...]`` (``[rows, d_model]`` for residual
            hooks, ``[rows, n_heads, d_head]`` for ``attn.hook_z``). For an
            on-disk store a mapping that reads the shards on access.
        example_id, position, token: ``[rows]`` long tensors.
        labels: label name -> ``[rows]`` values (long for classification,
            float for regression).
        label_mask: label name -> ``[rows]`` bool, where that label is defined.
        label_kinds: label name -> ``"classification"`` or ``"regression"``.
        manifest: provenance: model source and fingerprint, task or data,
            hooks, shapes, versions. Sweeps use it to rebuild the model.
        path: the store directory of an on-disk store, ``None`` in memory.

    Example:
        >>> import probekit as pk
        >>> task = pk.tasks.get("parens")
        >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab))
        >>> store = pk.cache_activations(model, task, n=4)
        >>> len(store), store.layers(), store.layer("L0").shape
        (196, ['embed', 'L0'], torch.Size([196, 32]))
    """

    acts: Mapping[str, Tensor]
    example_id: Tensor
    position: Tensor
    token: Tensor
    labels: dict[str, Tensor] = field(default_factory=dict)
    label_mask: dict[str, Tensor] = field(default_factory=dict)
    label_kinds: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.example_id)
        acts = [] if isinstance(self.acts, disk.ShardedActs) else list(self.acts.items())
        for name, t in [*acts, ("position", self.position), ("token", self.token),
                        *self.labels.items(), *self.label_mask.items()]:
            if t.shape[0] != n:
                raise ProbekitError(f"store column {name!r} has {t.shape[0]} rows, expected {n}")
        for name in self.labels:
            self.label_mask.setdefault(name, torch.ones(n, dtype=torch.bool))

    # -- on disk -------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True, allow_partial: bool = False) -> ActivationStore:
        """Open an on-disk store written by ``cache_activations(..., out=path)``.

        Activations stay in the shards until read (``acts[hook]``,
        :meth:`rows`, :meth:`iter_batches`); the row index and labels are loaded. Every shard's sha256 is checked against
        the manifest, and its columns, shapes and dtypes against the manifest's
        description, so a corrupt, truncated or foreign shard is refused with
        an error naming it.

        Args:
            path: the store directory.
            verify: check the shards' checksums (reads every byte once).
            allow_partial: open a store whose caching was interrupted (only
                its complete shards); otherwise that is an error.
        """
        root = Path(path)
        manifest = disk.read_manifest(root)
        if not manifest.get("complete") and not allow_partial:
            done = manifest["shards"][-1]["examples"][1] if manifest.get("shards") else 0
            raise ProbekitError(
                f"the store at {root} is incomplete ({done} of {manifest['data']['n']} examples cached); "
                "run cache_activations with the same arguments to resume it"
            )
        reader = disk.ShardReader(root, manifest, verify=verify)
        if manifest.get("complete") and reader.rows != manifest.get("rows"):
            raise ProbekitError(
                f"the store at {root} is inconsistent: its shards hold {reader.rows} rows, its manifest says {manifest.get('rows')}"
            )
        label_names = list(manifest.get("labels", {}))
        return cls(
            acts=disk.ShardedActs(reader, manifest["hooks"]),
            example_id=reader.column("example_id"),
            position=reader.column("position"),
            token=reader.column("token"),
            labels={k: reader.column(f"label.{k}") for k in label_names},
            label_mask={k: reader.column(f"label_mask.{k}") for k in label_names},
            label_kinds={k: v["kind"] for k, v in manifest.get("labels", {}).items()},
            manifest=manifest,
            path=root,
        )

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    # -- shape ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.example_id)

    def __repr__(self) -> str:
        where = f"at {str(self.path)!r}" if self.path else "in memory"
        return (f"ActivationStore({len(self)} rows, {len(self.acts)} hooks, "
                f"labels={list(self.labels)}, {where})")

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

    def _flat(self, ref: HookRef, x: Tensor) -> Tensor:
        if ref.head is not None:
            x = x[:, ref.head]
        return x.reshape(x.shape[0], -1)

    def layer(self, spec: str | int, hook: str = "resid_post") -> Float[Tensor, "rows d"]:
        """``[rows, d]`` activations of one layer (``embed``, ``L3``, ``L1H2``, an int or a hook name)."""
        ref = self.ref(spec, hook)
        return self._flat(ref, self.acts[ref.name])

    def stack(self, specs: list[str] | None = None) -> Float[Tensor, "layer rows d"]:
        """``[layer, rows, d]``: the given layers (default: every residual layer) stacked."""
        specs = specs or self.layers()
        return torch.stack([self.layer(s) for s in specs])

    def label(self, name: str) -> tuple[Tensor, Bool[Tensor, " rows"]]:
        """(values, defined-mask) of a label, both ``[rows]``."""
        if name not in self.labels:
            raise unknown("label", name, self.labels)
        return self.labels[name], self.label_mask[name]

    def rows(self, spec: str | int, start: int, stop: int, hook: str = "resid_post") -> Float[Tensor, "rows d"]:
        """``[stop - start, d]``: rows ``start:stop`` of one layer; on disk, reads only the shards holding them."""
        ref = self.ref(spec, hook)
        if isinstance(self.acts, disk.ShardedActs):
            return self._flat(ref, self.acts.slice(ref.name, start, stop))
        return self._flat(ref, self.acts[ref.name][start:stop])

    def iter_batches(self, specs: list[str], batch_rows: int) -> Iterator[tuple[slice, dict[str, Tensor]]]:
        """Stream ``(rows slice, {spec: [b, d]})`` batches, for stores larger than memory."""
        if batch_rows < 1:
            raise ProbekitError(f"batch_rows must be at least 1, got {batch_rows}")
        for s in specs:
            self.ref(s)  # fail before the first batch
        for start in range(0, len(self), batch_rows):
            sl = slice(start, min(start + batch_rows, len(self)))
            yield sl, {s: self.rows(s, sl.start, sl.stop) for s in specs}

    def to_dict(self) -> dict[str, Any]:
        out = {"rows": len(self), "hooks": self.hooks, "labels": dict(self.label_kinds), **self.manifest}
        if self.path is not None:
            out["path"] = str(self.path)
        return out
