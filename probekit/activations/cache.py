"""Run a model over a task or user data and cache chosen hooks, token by token.

The forward pass runs with one hook per needed hook point (TransformerLens'
``model.hooks``); each hook gathers the batch's rows straight into a
preallocated slot of the sink (:mod:`probekit.activations.sinks`), and once the
last needed hook has fired the forward stops (TransformerLens'
``StopAtLayerException``), so nothing after the deepest cached layer runs —
no final norm, no unembedding. Caching therefore costs about one forward pass.

An on-disk store is written as it goes and resumes after a crash: see
:mod:`probekit.activations.disk` for the layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.exceptions import StopAtLayerException

from probekit.activations import disk
from probekit.activations.sinks import Columns, MemorySink, ShardSink, row_bytes
from probekit.activations.store import ActivationStore
from probekit.errors import ProbekitError, closest
from probekit.hooks import BLOCK_KINDS, HOOK_KINDS, hook_name, residual_layers, resolve
from probekit.model import fingerprint
from probekit.tasks import Task

log = logging.getLogger(__name__)

#: activation buffers of an on-disk store when no budget is given
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | str) -> int:
    """A size in bytes from an int or a string such as ``"256MB"``, ``"1.5GiB"``, ``"512k"``.

    ``KB``/``MB``/``GB`` are powers of 1000; ``KiB``/``MiB``/``GiB`` and the bare
    ``k``/``M``/``G`` are powers of 1024.
    """
    if isinstance(value, bool):
        raise ProbekitError(f"memory budget must be a size such as 256MB, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ProbekitError(f"memory budget must be positive, got {value}")
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise ProbekitError(
            f"cannot read memory budget {value!r}: give a positive size such as 256MB, 1.5GiB or 500000000"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def expand_hooks(hooks: list[str] | str, n_layers: int, valid: set[str] | None = None) -> list[str]:
    """Expand hook kinds to names: ``resid_post`` -> embed + every block's resid_post; ``attn_out`` -> every block's."""
    if isinstance(hooks, str):
        hooks = [h for h in hooks.split(",") if h.strip()]
    out: list[str] = []
    for h in hooks:
        h = h.strip()
        if h == "resid_post":
            out += [r.name for r in residual_layers(n_layers)]
        elif h in HOOK_KINDS:
            out += [hook_name(i, h) for i in range(n_layers)]
        else:
            try:
                out.append(resolve(h, n_layers, hook="resid_post", valid=valid).name)
            except ProbekitError as e:
                if "unknown hook name" not in str(e) and "cannot read layer" not in str(e):
                    raise
                near = closest(h, [*HOOK_KINDS, *(valid or ())])
                hint = f"; did you mean {', '.join(repr(v) for v in near)}?" if near else ""
                raise ProbekitError(
                    f"unknown hook {h!r}{hint} (valid: the kinds {', '.join(HOOK_KINDS)}; embed, L<layer>, "
                    "L<layer>H<head>; or a TransformerLens hook name of the model)"
                ) from None
    if not out:
        raise ProbekitError(f"no hooks to cache; give kinds such as {', '.join(BLOCK_KINDS)}")
    return list(dict.fromkeys(out))


def select_positions(mask: Tensor, positions: str | Sequence[int] | None) -> Tensor:
    """``[batch, pos]`` bool: the rows to cache among the real (``mask``) positions.

    Args:
        mask: ``True`` at real tokens.
        positions: ``None`` (every real token), ``"last"`` (each sequence's last
            real token) or a list of indices into each sequence's real tokens
            (negative ones count from its end; indices past its end are skipped).
    """
    if positions is None:
        return mask.clone()
    rank = mask.long().cumsum(1) - 1  # index among the sequence's real tokens
    count = mask.sum(1, keepdim=True)
    if isinstance(positions, str):
        if positions != "last":
            raise ProbekitError(f"positions must be None, 'last' or a list of ints, got {positions!r}")
        return mask & (rank == count - 1)
    try:
        wanted = [int(p) for p in positions]
    except (TypeError, ValueError):
        raise ProbekitError(f"positions must be None, 'last' or a list of ints, got {positions!r}") from None
    if not wanted:
        raise ProbekitError("positions is an empty list; give None for every position")
    keep = torch.zeros_like(mask)
    for p in dict.fromkeys(wanted):
        target = torch.full_like(count, p) if p >= 0 else count + p
        keep |= mask & (rank == target)
    return keep


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))


def _hash_tensors(*ts: Tensor) -> str:
    h = hashlib.sha256()
    for t in ts:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{list(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _hook_points(model, names: list[str]) -> list[tuple[str, list[str], int]]:
    """Group hook names by the hook point that fires them: (name to hook, names served, position dim)."""
    groups: dict[int, tuple[str, list[str], int]] = {}
    for name in names:
        hp = model.hook_dict[name]
        pos_dim = getattr(hp, "pos_dim", None)
        if pos_dim is None:
            pos_dim = -2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1
        groups.setdefault(id(hp), (name, [], pos_dim))[1].append(name)
    return list(groups.values())


def _row_shapes(model, names: list[str], tokens: Tensor, attn: Tensor | None, device) -> dict[str, tuple[list[int], torch.dtype]]:
    """Per-row shape and dtype of each hook, from a forward pass over one sequence."""
    kwargs = {} if attn is None else {"attention_mask": attn.to(device)}
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens.to(device), names_filter=list(names), return_cache_object=False, **kwargs)
    except KeyError as e:
        raise ProbekitError(f"cannot cache these hooks on this model: {e}") from None
    out = {}
    for name, pos_dim in [(n, d) for _, ns, d in _hook_points(model, names) for n in ns]:
        if cache.get(name) is None:
            raise ProbekitError(f"hook {name!r} does not fire on this model (TransformerLens serves it gated or not at all)")
        x = cache[name].movedim(pos_dim, 1)
        out[name] = (list(x.shape[2:]), x.dtype)
    return out


class _Capture:
    """The forward hooks: gather each batch's rows into the sink's slot, stop after the last one."""

    def __init__(self, model, names: list[str], stop_early: bool):
        self.points = _hook_points(model, names)
        self.stop_early = stop_early
        self.dest: dict[str, Tensor] = {}
        self.idx: Tensor | None = None  # flat row indices, on the model's device; None = all
        self.fired: set[int] = set()  # hook points that fired in this forward pass

    def hooks(self) -> list[tuple[str, Any]]:
        return [(name, self._make(i, served, pos_dim)) for i, (name, served, pos_dim) in enumerate(self.points)]

    def missing(self) -> list[str]:
        return [name for i, (name, _, _) in enumerate(self.points) if i not in self.fired]

    def _make(self, i: int, served: list[str], pos_dim: int):
        def hook(x: Tensor, hook) -> None:
            if i in self.fired:
                raise ProbekitError(f"hook {served[0]!r} fires more than once per forward pass; it cannot be cached per token")
            x = x.detach()
            if pos_dim != 1:
                x = x.movedim(pos_dim, 1)
            flat = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
            for name in served:
                dst = self.dest[f"act.{name}"]
                if self.idx is None:
                    dst.copy_(flat)
                elif flat.device == dst.device and flat.dtype == dst.dtype:
                    torch.index_select(flat, 0, self.idx, out=dst)
                else:
                    dst.copy_(flat.index_select(0, self.idx))
            self.fired.add(i)
            if self.stop_early and len(self.fired) == len(self.points):
                raise StopAtLayerException(x)  # the bridge's forward returns here: nothing deeper is needed

        return hook


def cache_activations(
    model,
    task: Task,
    hooks: list[str] | str = "resid_post",
    *,
    n: int | None = 512,
    seed: int = 0,
    split: str = "test",
    batch_size: int = 64,
    positions: str | Sequence[int] | None = None,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    dtype: torch.dtype | str | None = None,
    shard_rows: int | None = None,
) -> ActivationStore:
    """Cache per-token activations of ``hooks`` over ``n`` sequences of ``task``.

    Args:
        model: a TransformerBridge.
        task: a built-in task, or user data (``probekit.load_data``): any
            :class:`~probekit.tasks.Task` whose batches mark padding with ``mask``.
        hooks: kinds (``resid_post``, ``attn_out``, ``z`` …) or hook names.
        n: number of sequences; ``None`` for all of the task's examples
            (user data, which has ``n_examples``).
        seed: data seed.
        split: ``"train"`` or ``"test"`` data of the task.
        batch_size: sequences per forward pass (lowered if one batch would not
            fit the memory budget).
        positions: ``None`` for every real position, ``"last"`` for the last
            real one, or a list of indices (negative from the end).
        out: ``None`` for an in-memory store, a directory for an on-disk store.
            An interrupted store there is resumed from its last complete shard;
            a complete one with the same model and data is returned as it is.
        device: where to run (default: the model's device; it must match it).
        progress: show a progress bar.
        memory_budget: bytes (or ``"256MB"``) the activation buffers of an
            on-disk store may take, default 256 MiB; shards are flushed when
            a buffer is full.
        overwrite: discard any store at ``out`` and cache from scratch
            (without it, a store there from another model or data is an error).
        dtype: store activations in this dtype (default: as the model computes them).
        shard_rows: at most this many rows per shard (default: as the budget allows).

    Returns:
        an :class:`ActivationStore` whose rows are the cached (example,
        position) pairs of non-padded tokens.

    Example:
        >>> import probekit as pk
        >>> task = pk.tasks.get("parens")
        >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab))
        >>> store = pk.cache_activations(model, task, ["resid_post"], n=8, positions="last")
        >>> len(store), store.example_id.tolist() == list(range(8))
        (8, True)
    """
    if batch_size < 1:
        raise ProbekitError(f"batch_size must be at least 1, got {batch_size}")
    if out is None and memory_budget is not None:
        raise ProbekitError("memory_budget bounds the shard buffers of an on-disk store; give out=DIR to use it")
    n = _resolve_n(task, n)
    names = expand_hooks(hooks, model.cfg.n_layers, set(model.hook_dict))
    device = _check_device(model, device)
    store_dtype = _dtype(dtype)

    batch = task.batch(n, seed, split)
    tokens, mask = batch.tokens.to("cpu"), batch.mask.to("cpu").bool()
    if tokens.shape[0] != n or mask.shape != tokens.shape:
        raise ProbekitError(f"task {task.name!r} gave tokens {list(tokens.shape)} and mask {list(mask.shape)} for n={n}")
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise ProbekitError(f"sequences of {tokens.shape[1]} tokens are longer than the model's context ({n_ctx})")
    keep = select_positions(mask, positions)
    labels, label_mask, kinds = _labels(task, batch, tokens.shape)
    attn_all = bool(mask.all())

    shapes = _row_shapes(model, names, tokens[:1], None if attn_all else mask[:1].long(), device)
    columns: Columns = {c: ([], torch.int64) for c in disk.INDEX_COLUMNS}
    for name, (shape, dt) in shapes.items():
        columns[f"act.{name}"] = (shape, store_dtype or dt)
    for k, v in labels.items():
        columns[f"label.{k}"] = ([], v.dtype)
        columns[f"label_mask.{k}"] = ([], torch.bool)

    manifest = _manifest(model, task, names, columns, kinds, n=n, seed=seed, split=split, positions=positions,
                         rows=int(keep.sum()), data_hash=_hash_tensors(tokens, mask, keep))
    per_example = int(keep.sum(1).max()) if n else 1
    start = 0
    if out is None:
        sink: MemorySink | ShardSink = MemorySink(columns, int(keep.sum()))
    else:
        root = Path(out)
        budget = parse_bytes(memory_budget if memory_budget is not None else DEFAULT_MEMORY_BUDGET)
        capacity = budget // (2 * row_bytes(columns))
        if shard_rows is not None:
            if shard_rows < 1:
                raise ProbekitError(f"shard_rows must be at least 1, got {shard_rows}")
            capacity = min(capacity, shard_rows)
        if capacity < max(per_example, 1):
            raise ProbekitError(
                f"memory budget {memory_budget or DEFAULT_MEMORY_BUDGET!r} is too small: two buffers of one sequence's "
                f"{max(per_example, 1)} rows need {2 * max(per_example, 1) * row_bytes(columns)} bytes"
            )
        batch_size = min(batch_size, capacity // max(per_example, 1))
        manifest["batch_size"], manifest["shard_capacity"] = batch_size, capacity
        resumed = _prepare_dir(root, manifest, overwrite)
        if resumed is None:  # already complete
            log.info("store at %s is complete; nothing to do", root)
            return ActivationStore.open(root)
        manifest, start = resumed
        sink = ShardSink(root, manifest, columns, capacity, start)

    _run(model, sink, names, tokens, mask, keep, labels, label_mask, start=start, batch_size=batch_size,
         device=device, attn_all=attn_all, progress=progress)
    if isinstance(sink, ShardSink):
        sink.close()
        return ActivationStore.open(out, verify=False)
    data = sink.close()
    manifest["complete"] = True
    return ActivationStore(
        acts={h: data[f"act.{h}"] for h in names},
        example_id=data["example_id"],
        position=data["position"],
        token=data["token"],
        labels={k: data[f"label.{k}"] for k in labels},
        label_mask={k: data[f"label_mask.{k}"] for k in labels},
        label_kinds=kinds,
        manifest=manifest,
    )


def _run(model, sink, names, tokens, mask, keep, labels, label_mask, *, start: int, batch_size: int, device,
         attn_all: bool, progress: bool) -> None:
    """The caching loop: one forward per batch, rows gathered by the hooks into the sink."""
    n, P = tokens.shape
    capture = _Capture(model, names, stop_early=isinstance(model, TransformerBridge))
    was_training = model.training
    model.eval()
    bar = tqdm(total=n, initial=start, disable=not progress, unit="seq", desc="caching")
    try:
        with torch.no_grad(), model.hooks(fwd_hooks=capture.hooks()):
            for s in range(start, n, batch_size):
                e = min(s + batch_size, n)
                kb = keep[s:e]
                flat = kb.reshape(-1).nonzero().squeeze(1)
                r = len(flat)
                if r:
                    dest = sink.slot(r, s)
                    dest["example_id"].copy_(flat // P + s)
                    dest["position"].copy_(flat % P)
                    dest["token"].copy_(tokens[s:e].reshape(-1)[flat])
                    for k in labels:
                        dest[f"label.{k}"].copy_(labels[k][s:e].reshape(-1)[flat])
                        dest[f"label_mask.{k}"].copy_(label_mask[k][s:e].reshape(-1)[flat])
                    capture.dest = dest
                    capture.idx = None if r == kb.numel() else flat.to(device)
                    capture.fired = set()
                    kwargs = {} if attn_all else {"attention_mask": mask[s:e].long().to(device)}
                    model(tokens[s:e].to(device), **kwargs)
                    if capture.missing():
                        raise ProbekitError(f"hooks {capture.missing()} did not fire in the forward pass")
                sink.commit(r, e)
                bar.update(e - s)
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
        model.train(was_training)


def _resolve_n(task: Task, n: int | None) -> int:
    available = getattr(task, "n_examples", None)
    if n is None:
        if available is None:
            raise ProbekitError(f"n=None means all examples, but task {task.name!r} generates data: give n")
        return int(available)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProbekitError(f"n must be a positive number of sequences, got {n!r}")
    if available is not None and n > available:
        log.info("%s has %d examples; caching all of them (asked for %d)", task.name, available, n)
        return int(available)
    return n


def _check_device(model, device) -> torch.device:
    try:
        model_device = next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        model_device = torch.device("cpu")
    if device is None:
        return model_device
    try:
        want = torch.device(device)
    except (RuntimeError, TypeError):
        raise ProbekitError(f"cannot read device {device!r}: use cpu, cuda, cuda:0, mps …") from None
    if want.type != model_device.type or (want.index is not None and want != model_device):
        raise ProbekitError(f"device {str(want)!r} differs from the model's {str(model_device)!r}; move the model first")
    return model_device


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    valid = ("float32", "float16", "bfloat16", "float64")
    if dtype not in valid:
        raise ProbekitError(f"unknown store dtype {dtype!r} (valid: {', '.join(valid)})")
    return getattr(torch, dtype)


def _labels(task: Task, batch, shape) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, str]]:
    """Labels and their masks as ``[batch, pos]`` (per-sequence labels broadcast over positions)."""
    specs = {s.name: s.kind for s in task.label_specs}
    labels, masks, kinds = {}, {}, {}
    for name, v in batch.labels.items():
        v = v.to("cpu")
        m = batch.label_mask.get(name)
        m = torch.ones(shape, dtype=torch.bool) if m is None else m.to("cpu").bool()
        if v.dim() == 1:
            v = v[:, None].expand(shape)
        if m.dim() == 1:
            m = m[:, None].expand(shape)
        if tuple(v.shape) != tuple(shape) or tuple(m.shape) != tuple(shape):
            raise ProbekitError(f"label {name!r} has shape {list(v.shape)}, expected {list(shape)} or [{shape[0]}]")
        labels[name], masks[name] = v, m
        kinds[name] = specs.get(name, "regression" if v.is_floating_point() else "classification")
    return labels, masks, kinds


def _manifest(model, task: Task, names, columns: Columns, kinds, *, n, seed, split, positions, rows, data_hash):
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
        "task": _jsonable(task.to_dict()),
        "control_key": task.control_key,
        "hooks": names,
        "n": n,
        "seed": seed,
        "split": split,
        "model": {
            "source": _jsonable(getattr(model, "probekit_source", None)),
            "fingerprint": fingerprint(model),
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
            "d_vocab": getattr(cfg, "d_vocab", None), "n_ctx": getattr(cfg, "n_ctx", None),
        },
        "data": {"task": _jsonable(task.to_dict()), "n": n, "seed": seed, "split": split,
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


def _prepare_dir(root: Path, manifest: dict[str, Any], overwrite: bool) -> tuple[dict[str, Any], int] | None:
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
