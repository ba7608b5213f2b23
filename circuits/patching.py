"""Activation patching, batched: equal to TransformerLens' ``get_act_patch_*``, many patches per forward.

Activation patching (Vig et al. 2020; Meng et al. 2022; Wang et al. 2022)
runs one input with an activation taken from another and measures a metric.
``direction="denoising"`` (the default, TransformerLens' convention) runs the
corrupt input with clean activations patched in, so
``patch(model, clean, corrupt, metric, target=t).values`` equals
``get_act_patch_*(model, corrupt, clean_cache, metric)``;
``direction="noising"`` runs the clean input with corrupt activations.

Example:
    >>> import probekit as pk, circuits
    >>> task = pk.tasks.get("induction")
    >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, attn_only=True, d_vocab=task.d_vocab))
    >>> pairs = task.patching_pairs(4, seed=0)
    >>> metric = pk.metrics.make("logit-diff", answers=pairs.answers, wrong=pairs.wrong)
    >>> res = circuits.patch(model, pairs.clean, pairs.corrupt, metric, target="heads", progress=False)
    >>> res.values.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import targets as _targets
from circuits._engine import Engine, check_tokens, chunks, eval_mode
from circuits._fast import POINTS, FastSuffix
from circuits._fused import fused
from circuits.result import PatchResult, bootstrap_ci
from probekit.errors import ProbekitError, unknown
from probekit.metrics import Metric

log = logging.getLogger(__name__)

Direction = Literal["denoising", "noising"]
DIRECTIONS = ("denoising", "noising")


def pos_labels(model, tokens: Tensor) -> list[str]:
    """``"i:token"`` for each position of the first sequence, so repeated tokens stay distinct."""
    ids = tokens[0].tolist()
    tok = getattr(model, "tokenizer", None)
    try:
        strs = tok.convert_ids_to_tokens(ids) if tok is not None else [str(i) for i in ids]
    except Exception:  # a tokenizer that cannot map ids
        strs = [str(i) for i in ids]
    return [f"{i}:{s}" for i, s in enumerate(strs)]


def axis_labels(model, tokens: Tensor, axes: tuple[str, ...], sizes: tuple[int, ...]) -> dict[str, list[str]]:
    """Tick labels for each axis of a result."""
    out: dict[str, list[str]] = {}
    for ax, n in zip(axes, sizes):
        if ax == "layer":
            out[ax] = [f"L{i}" for i in range(n)]
        elif ax in ("pos", "dest_pos", "src_pos"):
            out[ax] = pos_labels(model, tokens)[:n]
        elif ax == "head":
            out[ax] = [f"H{i}" for i in range(n)]
        else:
            out[ax] = [str(i) for i in range(n)]
    return out


class Evaluator:
    """A metric checked and evaluated on one batch of logits, or on ``K`` stacked copies at once.

    A :class:`probekit.metrics.Metric` takes the copies in one call and says which position it reads
    (:meth:`reads_one_position`); any other function of the logits is called once per copy.
    """

    def __init__(self, metric: Callable[[Tensor], Tensor], batch: int, per_example: bool):
        self.metric, self.batch, self.per_example = metric, batch, per_example
        self.stacked = isinstance(metric, Metric)

    def _checked(self, out, lead: tuple[int, ...] = ()) -> Tensor:
        out = torch.as_tensor(out)
        if self.per_example:
            if tuple(out.shape) != (*lead, self.batch):
                raise ProbekitError(f"with per_example=True the metric must return one value per example "
                                    f"([{self.batch}]), got shape {tuple(out.shape[len(lead):])}")
        elif tuple(out.shape) != lead:
            raise ProbekitError(f"the metric must return a scalar, got shape {tuple(out.shape[len(lead):])}; "
                                "use per_example=True for [batch] metrics")
        return out.detach().float()

    def __call__(self, logits: Tensor) -> Tensor:
        """The metric of logits ``[batch, pos, d_vocab]``: a scalar, or ``[batch]`` with ``per_example``."""
        return self._checked(self.metric(logits))

    def many(self, logits: Tensor) -> Tensor:
        """The metric of each of ``K`` copies, logits ``[K, batch, pos, d_vocab]``: ``[K]`` or ``[K, batch]``."""
        if self.stacked:
            return self._checked(self.metric(logits), (logits.shape[0],))
        return torch.stack([self(lg) for lg in logits])

    def check_stacked(self, logits: Tensor) -> None:
        """Whether stacked copies are evaluated copy by copy: a :class:`~probekit.metrics.Metric` given two different
        copies at once must return each copy's own value. One that mixes copies (a mean over every leading axis, say)
        or cannot take them is called once per copy from then on (and is not trusted to read one position)."""
        if not self.stacked:
            return
        other = logits.roll(1, dims=-1)
        try:
            both = self._checked(self.metric(torch.stack([logits, other])), (2,))
            ok = torch.allclose(both, torch.stack([self(logits), self(other)]), rtol=1e-5, atol=1e-6)
        except (ProbekitError, RuntimeError, IndexError, ValueError):
            ok = False
        if not ok:
            log.warning("metric %r does not evaluate stacked copies one by one; calling it once per copy",
                        self.metric.name)
            self.stacked = False

    def reads_one_position(self, logits: Tensor) -> int | None:
        """The position a :class:`~probekit.metrics.Metric` declares it reads (non-negative), once ``logits`` show
        it: the metric of ``logits`` equals that of their row at that position copied to every position. ``None``
        for other metrics, one :meth:`check_stacked` found calling copies one by one, or a declaration the logits
        contradict."""
        if not self.stacked:
            return None
        T = logits.shape[1]
        P = int(self.metric.pos)
        if not -T <= P < T:
            raise ProbekitError(f"the metric reads position {P}, outside the {T} positions of the input")
        P %= T
        full = self(logits)
        if not torch.equal(self(logits[:, P : P + 1].expand_as(logits)), full):
            log.warning("metric %r does not behave as a Metric reading position %d; computing every position",
                        self.metric.name, P)
            return None
        return P


def evaluator(metric: Callable[[Tensor], Tensor], batch: int, per_example: bool) -> Evaluator:
    """Wrap a metric: check it returns a scalar (or ``[batch]`` with ``per_example``)."""
    return Evaluator(metric, batch, per_example)


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise unknown("direction", direction, DIRECTIONS)


def check_target_available(model, target: _targets.Target) -> None:
    if target.hook_name(0) not in model.hook_dict:
        why = " (the model is attention-only)" if getattr(model.cfg, "attn_only", False) and target.needs_mlp else ""
        have = [t for t in _targets.names() if _targets.get(t).hook_name(0) in model.hook_dict]
        raise ProbekitError(f"patch target {target.name!r} does not exist on this model{why} (valid here: {', '.join(have)})")


def run_pair(model, base: Tensor, src: Tensor, names: set[str]):
    """Logits and caches (hook name -> tensor) of the base and source runs, holding only ``names``.

    Both run in one forward, stacked along the batch (examples never interact).
    """
    B = base.shape[0]
    logits, cache = model.run_with_cache(torch.cat([base, src]), names_filter=lambda n: n in names)
    base_cache = {n: cache[n][:B] for n in names}
    src_cache = {n: cache[n][B:] for n in names}
    return logits[:B], base_cache, logits[B:], src_cache


def _plain_pair(w, base: Tensor, src: Tensor, names: set[str]):
    """:func:`run_pair` through the fused weights' plain forward (no hooks fire)."""
    B = base.shape[0]
    logits, cache = w.forward(torch.cat([base, src]), names)
    return logits[:B], {n: a[:B] for n, a in cache.items()}, logits[B:], {n: a[B:] for n, a in cache.items()}


def finish(values_pe: Tensor, per_example: bool, n_boot: int, seed: int = 0) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Values, per-example values and their bootstrap interval from the stored metric values."""
    if not per_example:
        return values_pe, None, None, None
    lo, hi = bootstrap_ci(values_pe, n_boot=n_boot, seed=seed)
    return values_pe.mean(-1), values_pe, lo, hi


def patch(
    model,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    *,
    target: str = "resid",
    direction: Direction = "denoising",
    per_example: bool = False,
    n_boot: int = 1000,
    memory_mb: float = 512.0,
    progress: bool = True,
    fast_path: bool = True,
) -> PatchResult:
    """Patch every index of ``target`` in turn and evaluate ``metric``; batched, equal to TransformerLens.

    Args:
        model: a ``TransformerBridge``; switched to eval mode for the run if needed.
        clean: clean tokens ``[batch, pos]``.
        corrupt: corrupt tokens, same shape.
        metric: logits ``[batch, pos, d_vocab]`` to a scalar (or ``[batch]`` with ``per_example``).
        target: a name from :func:`circuits.targets.names` (``resid``, ``heads-by-pos``, ``pattern``, …).
        direction: ``"denoising"`` (corrupt run, clean activations; TransformerLens' default) or ``"noising"``.
        per_example: keep one value per example (the metric must return ``[batch]``);
            ``values`` is their mean, with bootstrap intervals.
        n_boot: bootstrap resamples for the intervals.
        memory_mb: activation budget of one stacked forward (sets how many patches share a forward).
        progress: show a progress bar.
        fast_path: for by-position targets on native models, recompute only the positions from
            the patch on (see :mod:`circuits._fast`); ``False`` forces the hooked engine.

    Returns:
        A :class:`PatchResult` whose ``values`` have the shape of the target's TransformerLens oracle.
    """
    t = _targets.get(target)
    check_direction(direction)
    with eval_mode(model), torch.no_grad():
        clean, corrupt = check_tokens(model, clean, corrupt)
        check_target_available(model, t)
        base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
        n_layers = model.cfg.n_layers
        names = ({f"blocks.{L}.hook_resid_pre" for L in range(n_layers)} | {t.hook_name(L) for L in range(n_layers)}
                 | {f"blocks.{n_layers - 1}.hook_resid_post"})
        fast_ok = fast_path and t.setter in ("pos", "pos_head") and t.kind in POINTS
        w = fused(model) if fast_ok else None
        hooked = w is not None and w.hooked()  # a hook on the model: its plain runs would skip it
        plain = w is not None and w.verified and not hooked
        if plain:
            # the plain forward reproduced a hooked run of these weights before: it stands in for the bridge
            base_logits, base_cache, src_logits, src_cache = _plain_pair(w, base, src, names)
        else:
            base_logits, base_cache, src_logits, src_cache = run_pair(model, base, src, names)
            if w is not None:
                w.verify(model, base, base_logits, base_cache)
        B, T = base.shape
        ev = evaluator(metric, B, per_example)
        base_v, src_v = ev(base_logits), ev(src_logits)
        ev.check_stacked(base_logits)
        out_pos = ev.reads_one_position(base_logits)
        engine = Engine(model, base, [base_cache[f"blocks.{L}.hook_resid_pre"] for L in range(n_layers)],
                        base_logits, memory_mb)
        rest_sizes = _rest_sizes(t, src_cache[t.hook_name(0)], T)
        store = torch.zeros((n_layers, *rest_sizes, *((B,) if per_example else ())))
        K = engine.copies_per_chunk()
        indices = list(itertools.product(*(range(n) for n in rest_sizes)))
        bar = tqdm(total=n_layers * len(indices), desc=f"patch {t.name}", disable=not progress)
        fast = None
        if w is not None:
            fast = FastSuffix(w, engine.resid, base_logits, base_cache[f"blocks.{n_layers - 1}.hook_resid_post"],
                              out_pos, check=hooked or not w.suffix_ok)
            fast = fast if fast.ok else None
            if fast is not None and not hooked:
                w.suffix_ok = True
        for L in range(n_layers):
            src_act = src_cache[t.hook_name(L)]
            if fast is not None:
                _fast_layer(fast, t, src_act, base_cache[t.hook_name(L)], K, store[L], ev, base_v, L)
                bar.update(len(indices))
                continue
            for chunk in chunks(indices, K):
                def edit(view: Tensor, chunk=chunk, src_act=src_act) -> None:
                    for k, idx in enumerate(chunk):
                        _targets.apply(t.setter, view[k], src_act, idx)

                if t.kind == "resid_pre":
                    logits = engine.run(L, len(chunk), [], resid_edit=edit, out_pos=out_pos)
                else:
                    logits = engine.run(L, len(chunk), [(t.hook_name(L), edit)], out_pos=out_pos)
                vals = ev.many(logits.expand(-1, -1, T, -1)).cpu()
                for k, idx in enumerate(chunk):
                    store[(L, *idx)] = vals[k]
                bar.update(len(chunk))
        bar.close()
    values, pe, lo, hi = finish(store, per_example, n_boot)
    clean_v, corrupt_v = (src_v, base_v) if direction == "denoising" else (base_v, src_v)
    return PatchResult(
        values=values, axes=t.axes, labels=axis_labels(model, clean, t.axes, tuple(values.shape)),
        target=t.name, direction=direction, metric=getattr(metric, "__name__", "metric"),
        clean=float(clean_v.mean()), corrupt=float(corrupt_v.mean()), per_example=pe, ci_low=lo, ci_high=hi,
        method="exact", extra={"suffix_forward": engine._suffix_ok, "copies_per_forward": K,
                               "position_skipping": fast is not None, "plain_forward": plain},
    )


#: a fast-path forward takes patches until its widest activation (``copies * batch * positions recomputed`` rows
#: of ``max(d_model, d_mlp)`` floats) reaches this many bytes. On CPU, small enough to stay in the processor's
#: cache, which measured faster than larger stacks (6 layers, d_model 256, resid sweep: 1,024 rows 5.5 s, 8,192
#: rows 7.5 s); on an accelerator larger stacks mean fewer kernel launches.
BYTES_PER_FORWARD_CPU = 4 * 2**20
BYTES_PER_FORWARD_ACCELERATOR = 32 * 2**20


def _fast_layer(fast: FastSuffix, t: _targets.Target, src_act: Tensor, base_act: Tensor, K: int, out: Tensor,
                ev: Evaluator, base_v: Tensor, L: int) -> None:
    """Every patch of block ``L`` through the fast path, into ``out`` (``[pos]`` or ``[pos, head]``, + batch).

    A patch that cannot change the metric is not run: its value is the base run's. That is a patch whose
    source equals the base activation there (clean and corrupt agree), one after the position the metric
    reads, or — in the last block, after attention — one at any other position than it.
    """
    B, T = src_act.shape[:2]
    P = fast.out_pos
    layer = fast.layers[0]
    width = max(layer.Wo.shape[1], layer.Win.shape[1] if layer.Win is not None else 0)
    budget = BYTES_PER_FORWARD_CPU if src_act.device.type == "cpu" else BYTES_PER_FORWARD_ACCELERATOR
    max_rows = max(B * T, budget // (width * src_act.element_size()))
    row_path = t.kind != "resid_pre"
    by_head = t.setter == "pos_head"
    # [pos] or [pos, head]: whether the patch is a no-op
    same = (src_act == base_act).flatten(3 if by_head else 2).all(-1).all(0)
    out[...] = base_v
    todo = []
    same_list = same.tolist()
    for idx in itertools.product(*(range(n) for n in same.shape)):
        p = idx[0]
        if (same_list[p][idx[1]] if by_head else same_list[p]) or (P is not None and (p > P or (row_path and L == fast.n_layers - 1 and p != P))):
            continue
        todo.append(idx)
    group: list[tuple[int, ...]] = []
    for i, idx in enumerate(todo):
        group.append(idx)
        nxt = todo[i + 1] if i + 1 < len(todo) else None
        if nxt is not None and len(group) < K and (len(group) + 1) * B * (T - group[0][0]) <= max_rows:
            continue
        ps = [g[0] for g in group]
        src = src_act[:, ps].transpose(0, 1)  # [copies, batch, ...]
        if row_path:
            logits = fast.patch_row(L, ps, t.kind, src, [g[1] for g in group] if by_head else None)
        else:
            logits = fast.patch_resid(L, ps, src)
        vals = ev.many(logits.expand(-1, -1, T, -1)).cpu()
        out[tuple(torch.tensor(c) for c in zip(*group))] = vals
        group = []


def _rest_sizes(t: _targets.Target, act0: Tensor, T: int) -> tuple[int, ...]:
    """Sizes of the non-layer axes of ``t``, read from an activation of layer 0."""
    if t.setter == "pos":
        return (T,)
    if t.setter == "head":
        return (act0.shape[2],)
    if t.setter == "pos_head":
        return (T, act0.shape[2])
    if t.setter == "pattern_head":
        return (act0.shape[1],)
    return (act0.shape[1], T)  # pattern_head_dest
