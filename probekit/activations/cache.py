"""Run a model over a task or user data and cache chosen hooks, token by token.

The forward pass runs with one hook per needed hook point; each hook gathers
the batch's rows straight into a preallocated slot of the sink, and the
forward stops once the deepest needed hook has fired
(:mod:`probekit.activations.capture`), so caching costs about one forward
pass. The sink is either the final in-memory tensors or two bounded shard
buffers written out by a background thread
(:mod:`probekit.activations.sinks`); an on-disk store is written as it goes,
resumes after a crash (:mod:`probekit.activations.resume`) and is laid out as
:mod:`probekit.activations.disk` describes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from probekit.activations import disk
from probekit.activations.capture import Capture, row_shapes
from probekit.activations.resume import build_manifest, hash_tensors, prepare_dir
from probekit.activations.sinks import Columns, MemorySink, ShardSink, row_bytes
from probekit.activations.store import ActivationStore
from probekit.errors import ProbekitError, closest
from probekit.hooks import BLOCK_KINDS, HOOK_KINDS, hook_name, residual_layers, resolve
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
    data = _Data.of(model, task, n, seed, split, positions)
    columns = _columns(model, names, data, device, _dtype(dtype))
    manifest = build_manifest(model, task, names, columns, data.kinds, n=n, seed=seed, split=split,
                              positions=positions, rows=data.rows, data_hash=data.hash())
    if out is None:
        sink: MemorySink | ShardSink = MemorySink(columns, data.rows)
        _run(model, sink, names, data, start=0, batch_size=batch_size, device=device, progress=progress)
        acts = sink.close()
        manifest["complete"] = True
        return ActivationStore(
            acts={h: acts[f"act.{h}"] for h in names},
            example_id=acts["example_id"],
            position=acts["position"],
            token=acts["token"],
            labels={k: acts[f"label.{k}"] for k in data.labels},
            label_mask={k: acts[f"label_mask.{k}"] for k in data.labels},
            label_kinds=data.kinds,
            manifest=manifest,
        )

    capacity = _capacity(columns, data.per_example, memory_budget, shard_rows)
    batch_size = min(batch_size, capacity // data.per_example)  # one batch always fits a buffer
    manifest["batch_size"], manifest["shard_capacity"] = batch_size, capacity
    prepared = prepare_dir(Path(out), manifest, overwrite)
    if prepared is None:
        log.info("the store at %s is complete; nothing to do", out)
        return ActivationStore.open(out)
    manifest, start = prepared
    sink = ShardSink(Path(out), manifest, columns, capacity, start)
    _run(model, sink, names, data, start=start, batch_size=batch_size, device=device, progress=progress)
    sink.close()
    return ActivationStore.open(out, verify=False)


@dataclass(frozen=True)
class _Data:
    """The sequences to cache and, per ``[example, position]``, which are rows and their labels."""

    tokens: Tensor
    mask: Tensor
    keep: Tensor
    labels: dict[str, Tensor]
    label_mask: dict[str, Tensor]
    kinds: dict[str, str]

    @classmethod
    def of(cls, model, task: Task, n: int, seed: int, split: str, positions) -> _Data:
        batch = task.batch(n, seed, split)
        tokens, mask = batch.tokens.to("cpu"), batch.mask.to("cpu").bool()
        if tokens.shape[0] != n or mask.shape != tokens.shape:
            raise ProbekitError(f"task {task.name!r} gave tokens {list(tokens.shape)} and mask {list(mask.shape)} for n={n}")
        d_vocab, n_ctx = getattr(model.cfg, "d_vocab", None), getattr(model.cfg, "n_ctx", None)
        if d_vocab is not None and bool(mask.any()) and int(tokens[mask].max()) >= d_vocab:
            raise ProbekitError(f"{task.name!r} has token ids up to {int(tokens[mask].max())} but the model's vocabulary "
                                f"has {d_vocab}: cache a task the model was built for")
        if n_ctx is not None and tokens.shape[1] > n_ctx:
            raise ProbekitError(f"sequences of {tokens.shape[1]} tokens are longer than the model's context ({n_ctx})")
        labels, label_mask, kinds = _labels(task, batch, tokens.shape)
        return cls(tokens, mask, select_positions(mask, positions), labels, label_mask, kinds)

    @property
    def rows(self) -> int:
        return int(self.keep.sum())

    @property
    def per_example(self) -> int:
        """The most rows one sequence gives (at least 1)."""
        return max(int(self.keep.sum(1).max()) if len(self.keep) else 1, 1)

    @property
    def padded(self) -> bool:
        return not bool(self.mask.all())

    def hash(self) -> str:
        return hash_tensors(self.tokens, self.mask, self.keep)


def _columns(model, names: list[str], data: _Data, device, store_dtype: torch.dtype | None) -> Columns:
    """What each row holds: every hook's activation, the row index, the labels and their masks."""
    attn = data.mask[:1].long() if data.padded else None
    columns: Columns = {c: ([], torch.int64) for c in disk.INDEX_COLUMNS}
    for name, (shape, dt) in row_shapes(model, names, data.tokens[:1], attn, device).items():
        columns[f"act.{name}"] = (shape, store_dtype or dt)
    for k, v in data.labels.items():
        columns[f"label.{k}"] = ([], v.dtype)
        columns[f"label_mask.{k}"] = ([], torch.bool)
    return columns


def _capacity(columns: Columns, per_example: int, memory_budget, shard_rows: int | None) -> int:
    """Rows per shard buffer: two buffers (one filling, one being written) fit the budget."""
    budget = parse_bytes(memory_budget if memory_budget is not None else DEFAULT_MEMORY_BUDGET)
    capacity = budget // (2 * row_bytes(columns))
    if shard_rows is not None:
        if shard_rows < 1:
            raise ProbekitError(f"shard_rows must be at least 1, got {shard_rows}")
        capacity = min(capacity, shard_rows)
    if capacity < per_example:
        raise ProbekitError(
            f"memory budget {memory_budget or DEFAULT_MEMORY_BUDGET!r} is too small: two buffers of one sequence's "
            f"{per_example} rows need {2 * per_example * row_bytes(columns)} bytes"
        )
    return capacity


def _run(model, sink, names: list[str], data: _Data, *, start: int, batch_size: int, device, progress: bool) -> None:
    """The caching loop: one forward per batch, rows gathered by the hooks into the sink's slots."""
    tokens, keep = data.tokens, data.keep
    n, P = tokens.shape
    capture = Capture(model, names, stop_early=isinstance(model, TransformerBridge))
    was_training = model.training
    model.eval()
    bar = tqdm(total=n, initial=start, disable=not progress, unit="seq", desc="caching")
    try:
        with torch.no_grad(), model.hooks(fwd_hooks=capture.hooks()):
            for s in range(start, n, batch_size):
                e = min(s + batch_size, n)
                flat = keep[s:e].reshape(-1).nonzero().squeeze(1)
                if len(flat):
                    dest = sink.slot(len(flat), s)
                    dest["example_id"].copy_(flat // P + s)
                    dest["position"].copy_(flat % P)
                    dest["token"].copy_(tokens[s:e].reshape(-1)[flat])
                    for k in data.labels:
                        dest[f"label.{k}"].copy_(data.labels[k][s:e].reshape(-1)[flat])
                        dest[f"label_mask.{k}"].copy_(data.label_mask[k][s:e].reshape(-1)[flat])
                    capture.start(dest, None if len(flat) == (e - s) * P else flat.to(device))
                    kwargs = {"attention_mask": data.mask[s:e].long().to(device)} if data.padded else {}
                    model(tokens[s:e].to(device), **kwargs)
                    if capture.missing():
                        raise ProbekitError(f"hooks {capture.missing()} did not fire in the forward pass")
                sink.commit(len(flat), e)
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
