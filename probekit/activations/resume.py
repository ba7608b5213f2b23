"""What is already at a store directory: nothing, an interrupted store to resume, or a finished one to reuse.

A store is resumed or reused only if its manifest's *identity* — the model's
fingerprint, the data (task parameters, ``n``, seed, split, positions and a
hash of the very tokens), the hooks and their shapes, dtypes and labels —
equals that of the caching run asked for; otherwise it is refused, unless
``overwrite=True`` discards it. Only files this package writes are ever
deleted: a directory holding anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probekit.activations import disk
from probekit.activations.sinks import Columns
from probekit.errors import ProbekitError
from probekit.model import fingerprint
from probekit.tasks import Task

log = logging.getLogger(__name__)


def jsonable(d: Any) -> Any:
    """``d`` as plain JSON values (paths and other objects as strings)."""
    return json.loads(json.dumps(d, default=str))


def hash_tensors(*ts: Tensor) -> str:
    """A short sha256 of tensors' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for t in ts:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{list(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def build_manifest(model, task: Task, names: list[str], columns: Columns, kinds: dict[str, str], *, n: int, seed: int,
                   split: str, positions, rows: int, data_hash: str) -> dict[str, Any]:
    """The manifest of a store of ``rows`` rows of ``columns``, with no shards yet."""
    cfg = model.cfg
    positions = list(positions) if positions is not None and not isinstance(positions, str) else positions
    return {
        "format": disk.FORMAT,
        "format_version": disk.FORMAT_VERSION,
        "complete": False,
        # the keys every store had first (probes and sweeps read them)
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_model": cfg.d_model,
        "task": jsonable(task.to_dict()),
        "control_key": task.control_key,
        "hooks": names,
        "n": n,
        "seed": seed,
        "split": split,
        "model": {
            "source": jsonable(getattr(model, "probekit_source", None)),
            "fingerprint": fingerprint(model),
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
            "d_vocab": getattr(cfg, "d_vocab", None), "n_ctx": getattr(cfg, "n_ctx", None),
        },
        "data": {"task": jsonable(task.to_dict()), "n": n, "seed": seed, "split": split,
                 "positions": positions, "sha256": data_hash},
        "shapes": {h: columns[f"act.{h}"][0] for h in names},
        "dtypes": {h: disk.dtype_name(columns[f"act.{h}"][1]) for h in names},
        "labels": {k: {"kind": kinds[k], "dtype": disk.dtype_name(columns[f"label.{k}"][1])} for k in kinds},
        "rows": rows,
        "versions": disk.versions(),
        "shards": [],
    }


#: manifest parts that must agree for a store to be resumed or reused
_IDENTITY = ("model.fingerprint", "data", "hooks", "shapes", "dtypes", "labels", "format_version")


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def prepare_dir(root: Path, manifest: dict[str, Any], overwrite: bool) -> tuple[dict[str, Any], int] | None:
    """Make ``root`` ready to write into: fresh, resumed (manifest and first example), or ``None`` if complete."""
    if root.exists() and not root.is_dir():
        raise ProbekitError(f"cannot write an activation store to {root}: it is a file")
    root.mkdir(parents=True, exist_ok=True)
    existing = None
    if (root / disk.MANIFEST).exists():
        try:
            existing = disk.read_manifest(root)
        except ProbekitError:
            if not overwrite:
                raise
    elif any(not disk.is_store_file(p.name) for p in root.iterdir()):
        raise ProbekitError(f"{root} is not empty and holds no activation store; choose a new directory for out")
    if existing is not None:
        differ = [k for k in _IDENTITY if _get(existing, k) != _get(manifest, k)]
        if differ and not overwrite:
            raise ProbekitError(
                f"the store at {root} was made from a different {' and '.join(differ)}; "
                "pass overwrite=True (--overwrite) to replace it, or choose another directory"
            )
        if not differ and not overwrite:
            if existing.get("complete"):
                return None
            _verify_shards(root, existing)
            _clean(root, keep={e["file"] for e in existing["shards"]} | {disk.MANIFEST})
            done = existing["shards"][-1]["examples"][1] if existing["shards"] else 0
            log.info("resuming the store at %s from example %d (%d shards)", root, done, len(existing["shards"]))
            resumed = {**manifest, "shards": existing["shards"]}
            disk.write_manifest(root, resumed)
            return resumed, done
        log.warning("overwriting the store at %s%s", root, f" (different {', '.join(differ)})" if differ else "")
    _clean(root, keep=set())
    disk.write_manifest(root, manifest)
    return manifest, 0


def _verify_shards(root: Path, manifest: dict[str, Any]) -> None:
    for entry in manifest["shards"]:
        path = root / entry["file"]
        if not path.is_file() or disk.sha256_file(path) != entry["sha256"]:
            raise ProbekitError(
                f"shard {entry['file']} of the store at {root} is missing or corrupt; "
                "pass overwrite=True (--overwrite) to cache from scratch"
            )


def _clean(root: Path, keep: set[str]) -> None:
    """Delete this module's files in ``root`` (shards, temp files, manifest) except ``keep``."""
    for p in root.iterdir():
        if disk.is_store_file(p.name) and p.name not in keep:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
