"""Attribution patching: a first-order estimate of every patch at once.

Attribution patching (Nanda 2023, "Attribution Patching: Activation Patching
At Industrial Scale"; Syed et al. 2023, "Attribution Patching Outperforms
Automated Circuit Discovery") replaces each patched forward by a linear
approximation around the run patches go into:

    metric(patched) ≈ metric(base) + (source − base) · ∂metric/∂activation

for every node, from two forward passes (source cached; base with gradients)
and one backward pass. ``values`` estimate the patched metric, in the shape of
:func:`circuits.patch`'s values, so the two compare directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Int
from torch import Tensor

from circuits import targets as _targets
from circuits._engine import check_tokens, eval_mode
from circuits.patching import Direction, axis_labels, check_direction, check_target_available
from circuits.result import PatchResult
from probekit.errors import ProbekitError


def correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two tensors' entries (e.g. attribution vs exact patching)."""
    x, y = a.detach().flatten().double().cpu(), b.detach().flatten().double().cpu()
    if x.shape != y.shape:
        raise ProbekitError(f"cannot correlate tensors of {x.numel()} and {y.numel()} entries")
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else float("nan")


def _contract(setter: str, prod: Tensor) -> Tensor:
    """Sum ``(source − base) * grad`` over everything but the target's index axes."""
    if setter == "pos":  # [batch, pos, ...]
        return prod.flatten(2).sum((0, 2))
    if setter == "head":  # [batch, pos, head, d_head]
        return prod.sum((0, 1, 3))
    if setter == "pos_head":
        return prod.sum((0, 3))
    if setter == "pattern_head":  # [batch, head, dest, src]
        return prod.sum((0, 2, 3))
    return prod.sum((0, 3))  # pattern_head_dest -> [head, dest]


def attribution_patch(
    model,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    *,
    target: str = "heads",
    direction: Direction = "denoising",
    exact: PatchResult | None = None,
) -> PatchResult:
    """Estimate :func:`circuits.patch` for every index of ``target`` in 2 forward + 1 backward passes.

    Args:
        model: a ``TransformerBridge``.
        clean: clean tokens ``[batch, pos]``.
        corrupt: corrupt tokens, same shape.
        metric: logits to a scalar.
        target: a patch target name (as :func:`circuits.patch`).
        direction: ``"denoising"`` (gradient at the corrupt run, clean − corrupt) or ``"noising"``.
        exact: an exact :func:`circuits.patch` result of the same target; its correlation with
            this estimate is stored in ``extra["correlation"]``.

    Returns:
        A :class:`PatchResult` (``method="attribution"``) with estimated patched metric values.
    """
    t = _targets.get(target)
    check_direction(direction)
    with eval_mode(model):
        clean, corrupt = check_tokens(model, clean, corrupt)
        check_target_available(model, t)
        base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
        hooks = [t.hook_name(L) for L in range(model.cfg.n_layers)]
        with torch.no_grad():
            src_logits, src_cache = model.run_with_cache(src, names_filter=lambda n: n in set(hooks))
        saved: dict[str, Tensor] = {}

        def keep(name: str):
            def hook(act: Tensor, hook) -> Tensor:  # noqa: ARG001
                act = act.detach().clone().requires_grad_(True) if not act.requires_grad else act
                act.retain_grad()
                saved[name] = act
                return act

            return hook

        with model.hooks(fwd_hooks=[(h, keep(h)) for h in hooks]):
            base_logits = model(base)
            m = torch.as_tensor(metric(base_logits))
            if m.ndim != 0:
                raise ProbekitError(f"attribution patching needs a scalar metric, got shape {tuple(m.shape)}")
            grads = torch.autograd.grad(m, [saved[h] for h in hooks], allow_unused=True)
        rows = []
        for h, g in zip(hooks, grads):
            delta = src_cache[h] - saved[h].detach()
            rows.append(_contract(t.setter, delta * (torch.zeros_like(delta) if g is None else g)))
        est = torch.stack(rows).detach().float().cpu() + float(m.detach())
        with torch.no_grad():
            src_v = float(torch.as_tensor(metric(src_logits)))
    base_v = float(m.detach())
    clean_v, corrupt_v = (src_v, base_v) if direction == "denoising" else (base_v, src_v)
    extra = {}
    if exact is not None:
        extra["correlation"] = correlation(est, exact.values)
    return PatchResult(values=est, axes=t.axes, labels=axis_labels(model, clean, t.axes, tuple(est.shape)),
                       target=t.name, direction=direction, metric=getattr(metric, "__name__", "metric"),
                       clean=clean_v, corrupt=corrupt_v, method="attribution", extra=extra)
