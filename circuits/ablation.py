"""Ablations of heads, attention layers and MLPs: zero, mean and resample, for single nodes and groups.

Zero ablation sets a node's output to 0; mean ablation to its mean over a
reference distribution (optionally per position; Wang et al. 2022); resample
ablation to its value on corrupt inputs (Chan et al. 2022, causal scrubbing).
Nodes are ``L1H2`` (a head: its ``hook_z`` slice, so ``W_O``'s bias stays),
``ATTN1`` (``hook_attn_out``) and ``MLP1`` (``hook_mlp_out``).

Example:
    >>> res = ablate(model, tokens, metric, nodes=["L0H1", "MLP1"], kind="zero")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from circuits._engine import Engine, check_tokens, chunks, eval_mode
from circuits.patching import evaluator, finish
from circuits.result import PatchResult
from probekit.errors import ProbekitError, unknown

AblationKind = Literal["zero", "mean", "resample"]
KINDS = ("zero", "mean", "resample")

_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_LAYER_NODE = re.compile(r"^(MLP|ATTN)(\d+)$")


@dataclass(frozen=True)
class Node:
    """A component: its hook, layer and head (``None`` for a whole layer output)."""

    label: str
    layer: int
    hook: str
    head: int | None = None


def parse_node(model, spec: str) -> Node:
    """``L1H2``, ``ATTN1`` or ``MLP1`` to a :class:`Node`, checked against the model."""
    s = str(spec).strip().upper()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if m := _HEAD.match(s):
        layer, head = int(m.group(1)), int(m.group(2))
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ProbekitError(f"node {spec!r} is out of range: the model has {n_layers} layers of {n_heads} heads")
        return Node(s, layer, f"blocks.{layer}.attn.hook_z", head)
    if m := _LAYER_NODE.match(s):
        kind, layer = m.group(1), int(m.group(2))
        if not 0 <= layer < n_layers:
            raise ProbekitError(f"node {spec!r} is out of range: the model has {n_layers} layers")
        hook = f"blocks.{layer}.hook_{'mlp' if kind == 'MLP' else 'attn'}_out"
        if hook not in model.hook_dict:
            raise ProbekitError(f"node {spec!r} does not exist: the model has no MLPs (attention-only)")
        return Node(s, layer, hook)
    raise ProbekitError(f"cannot read node {spec!r}: use 'L<layer>H<head>', 'ATTN<layer>' or 'MLP<layer>'")


def all_nodes(model) -> list[str]:
    """Every head, then every MLP (if any), in layer order."""
    out = []
    for L in range(model.cfg.n_layers):
        out += [f"L{L}H{h}" for h in range(model.cfg.n_heads)]
        if f"blocks.{L}.hook_mlp_out" in model.hook_dict:
            out.append(f"MLP{L}")
    return out


def _slice(act: Tensor, node: Node) -> Tensor:
    return act if node.head is None else act[:, :, node.head]


def ablate(
    model,
    tokens: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    *,
    nodes: Sequence[str] | None = None,
    groups: dict[str, Sequence[str]] | None = None,
    kind: AblationKind = "zero",
    reference: Int[Tensor, "ref pos"] | None = None,
    per_position: bool = False,
    corrupt: Int[Tensor, "batch pos"] | None = None,
    per_example: bool = False,
    n_boot: int = 1000,
    memory_mb: float = 512.0,
) -> PatchResult:
    """The metric with each node (or each group of nodes) ablated, batched.

    Args:
        model: a ``TransformerBridge``.
        tokens: the input ``[batch, pos]``.
        metric: logits to a scalar (``[batch]`` with ``per_example``).
        nodes: node names (``L1H2``, ``ATTN1``, ``MLP1``); default every head and MLP.
            Each is ablated on its own.
        groups: name -> nodes ablated together; used instead of ``nodes`` when given.
        kind: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: tokens whose mean activation a mean ablation uses (default ``tokens``);
            may have another batch size, same length when ``per_position``.
        per_position: mean ablation keeps one mean per position.
        corrupt: tokens (same shape as ``tokens``) a resample ablation takes activations from;
            default ``tokens`` rolled by one along the batch (each example gets another's).
        per_example: keep one value per example, with bootstrap intervals.
        n_boot: bootstrap resamples.
        memory_mb: activation budget of one stacked forward.

    Returns:
        A :class:`PatchResult` with axis ``("node",)``; ``clean`` is the unablated metric and
        ``corrupt`` the metric with every listed node ablated at once.
    """
    if kind not in KINDS:
        raise unknown("ablation kind", str(kind), KINDS)
    if groups is None:
        names = list(nodes) if nodes is not None else all_nodes(model)
        groups = {n: [n] for n in names}
    if not groups:
        raise ProbekitError("nothing to ablate: give at least one node")
    parsed = {g: [parse_node(model, n) for n in ns] for g, ns in groups.items()}
    for g, ns in parsed.items():
        if not ns:
            raise ProbekitError(f"group {g!r} has no nodes")
    hooks = sorted({n.hook for ns in parsed.values() for n in ns})
    with eval_mode(model), torch.no_grad():
        tokens, _ = check_tokens(model, tokens, tokens)
        n_layers = model.cfg.n_layers
        names = set(hooks) | {f"blocks.{L}.hook_resid_pre" for L in range(n_layers)}
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        values = _replacement(model, tokens, cache, hooks, kind, reference, per_position, corrupt)
        B = tokens.shape[0]
        ev = evaluator(metric, B, per_example)
        engine = Engine(model, tokens, [cache[f"blocks.{L}.hook_resid_pre"] for L in range(n_layers)], logits, memory_mb)
        jobs = [ns for ns in parsed.values()] + [[n for ns in parsed.values() for n in ns]]  # last: all at once
        out: list[Tensor] = []
        for chunk in chunks(jobs, engine.copies_per_chunk()):
            out += _run_jobs(engine, list(chunk), values, ev)
        store = torch.stack(out)
    full = store[-1]
    store = store[:-1]
    vals, pe, lo, hi = finish(store, per_example, n_boot)
    clean_v = ev(logits)
    labels = list(parsed)
    return PatchResult(values=vals, axes=("node",), labels={"node": labels}, target="ablation", direction="noising",
                       metric=getattr(metric, "__name__", "metric"), clean=float(clean_v.mean()),
                       corrupt=float(full.mean()), per_example=pe, ci_low=lo, ci_high=hi, method=f"{kind}-ablation",
                       extra={"kind": kind, "groups": {g: [n.label for n in ns] for g, ns in parsed.items()}})


def _run_jobs(engine: Engine, jobs: list[list[Node]], values: dict[str, Tensor], ev) -> list[Tensor]:
    """One stacked forward: copy ``k`` has the nodes of ``jobs[k]`` ablated."""
    start = min(n.layer for ns in jobs for n in ns)
    by_hook: dict[str, list[tuple[int, Node]]] = {}
    for k, ns in enumerate(jobs):
        for n in ns:
            by_hook.setdefault(n.hook, []).append((k, n))

    def make(hook: str, items: list[tuple[int, Node]]):
        def edit(view: Tensor) -> None:
            for k, n in items:
                _slice(view[k], n)[...] = _slice(values[hook], n)

        return edit

    logits = engine.run(start, len(jobs), [(h, make(h, items)) for h, items in by_hook.items()])
    return [ev(logits[k]).cpu() for k in range(len(jobs))]


def _replacement(model, tokens, cache, hooks, kind, reference, per_position, corrupt) -> dict[str, Tensor]:
    """What each ablated hook's activation is replaced with, broadcast to ``[batch, pos, ...]``."""
    B, T = tokens.shape
    if kind == "zero":
        return {h: torch.zeros_like(cache[h]) for h in hooks}
    if kind == "resample":
        if corrupt is None:
            src = tokens.roll(1, dims=0)
        else:
            src, _ = check_tokens(model, corrupt, corrupt)
            if src.shape != tokens.shape:
                raise ProbekitError(f"corrupt tokens must have the shape of tokens {tuple(tokens.shape)}, got {tuple(src.shape)}")
        _, c = model.run_with_cache(src, names_filter=lambda n: n in set(hooks))
        return {h: c[h] for h in hooks}
    ref = tokens if reference is None else check_tokens(model, reference, reference)[0]
    if per_position and ref.shape[1] != T:
        raise ProbekitError(f"per-position mean ablation needs reference sequences of length {T}, got {ref.shape[1]}")
    _, c = model.run_with_cache(ref, names_filter=lambda n: n in set(hooks))
    out = {}
    for h in hooks:
        a = c[h]
        mean = a.mean(0, keepdim=True) if per_position else a.mean((0, 1), keepdim=True)
        out[h] = mean.expand(B, T, *a.shape[2:]).contiguous()
    return out
