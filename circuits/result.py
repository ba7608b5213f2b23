"""The one result type of patching, ablation, attribution and path patching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from probekit.errors import ProbekitError


def bootstrap_ci(
    per_example: Tensor, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap interval of the batch mean (Efron & Tibshirani 1993).

    Args:
        per_example: values with the examples on the last axis, ``[..., batch]``.
        n_boot: resamples.
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``, each shaped like ``per_example.mean(-1)``.
    """
    if not 0 < level < 1:
        raise ProbekitError(f"level must be in (0, 1), got {level}")
    B = per_example.shape[-1]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, B, (n_boot, B), generator=g).to(per_example.device)
    x = per_example.float()
    means = torch.stack([x[..., row].mean(-1) for row in idx], dim=0)  # [n_boot, ...]
    a = (1 - level) / 2
    q = torch.tensor([a, 1 - a], device=x.device)
    lo, hi = torch.quantile(means, q, dim=0)
    return lo, hi


@dataclass(frozen=True)
class PatchResult:
    """Values of a metric under each patch, with their axes and baselines.

    Attributes:
        values: one metric value per patch; shape and axis order as TransformerLens'
            ``get_act_patch_*`` output for the target.
        axes: names of the axes of ``values`` (``("layer", "pos")``, …).
        labels: tick labels per axis (positions carry ``"index:token"`` so repeated tokens stay distinct).
        target: what was patched (a registry name, or ``"path-direct"``, ``"ablation"``, …).
        direction: ``"denoising"`` (corrupt run, clean activations in) or ``"noising"``.
        metric: the metric's name.
        clean: metric on the clean run.
        corrupt: metric on the corrupt run.
        per_example: ``values`` with one more, last axis over the examples, or ``None``.
        ci_low, ci_high: bootstrap interval of each value (from ``per_example``), or ``None``.
        method: ``"exact"``, ``"attribution"``, ``"ablation"``, ``"path-direct"`` or ``"path-frozen"``.
        extra: anything else worth keeping (e.g. attribution's correlation with exact patching).
    """

    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    target: str
    direction: str
    metric: str
    clean: float
    corrupt: float
    per_example: Tensor | None = None
    ci_low: Tensor | None = None
    ci_high: Tensor | None = None
    method: str = "exact"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> float:
        """The metric of the unpatched run patches go into."""
        return self.corrupt if self.direction == "denoising" else self.clean

    def effect(self, relative_to: str = "base") -> Tensor:
        """``values`` minus a baseline: ``"base"`` (the unpatched run), ``"clean"`` or ``"corrupt"``."""
        ref = {"base": self.base, "clean": self.clean, "corrupt": self.corrupt}
        if relative_to not in ref:
            raise ProbekitError(f"relative_to must be one of {sorted(ref)}, got {relative_to!r}")
        return self.values - ref[relative_to]

    def normalized(self) -> Tensor:
        """``values`` rescaled so the corrupt baseline is 0 and the clean one 1."""
        gap = self.clean - self.corrupt
        if abs(gap) < 1e-12:
            raise ProbekitError("cannot normalize: the clean and corrupt baselines are equal")
        return (self.values - self.corrupt) / gap

    def figure(self, *, normalized: bool = False, title: str | None = None):
        """A Plotly heatmap of the values (``probekit.viz.patch_figure``)."""
        from probekit.viz import patch_figure

        values = self.normalized() if normalized else self.values
        ttl = title or f"{self.method} patching of {self.target} ({self.direction}), metric {self.metric}"
        return patch_figure(values.detach().cpu().numpy(), axes=list(self.axes),
                            labels={k: list(v) for k, v in self.labels.items()}, title=ttl,
                            zmid=None if normalized else self.base,
                            colorbar_title="normalized" if normalized else self.metric,
                            ci_low=None if normalized or self.ci_low is None else self.ci_low.cpu().numpy(),
                            ci_high=None if normalized or self.ci_high is None else self.ci_high.cpu().numpy())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dictionary."""

        def lst(t: Tensor | None):
            return None if t is None else t.detach().cpu().tolist()

        return {
            "target": self.target,
            "direction": self.direction,
            "method": self.method,
            "metric": self.metric,
            "axes": list(self.axes),
            "shape": list(self.values.shape),
            "labels": self.labels,
            "values": lst(self.values),
            "clean": self.clean,
            "corrupt": self.corrupt,
            "per_example": lst(self.per_example),
            "ci_low": lst(self.ci_low),
            "ci_high": lst(self.ci_high),
            "extra": {k: (v.tolist() if isinstance(v, Tensor) else v) for k, v in self.extra.items()},
        }
