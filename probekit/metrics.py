"""Patching metrics: functions of a model's logits.

A metric maps logits ``[batch, pos, d_vocab]`` to a scalar (the batch mean,
``reduce="mean"``) or to one value per example (``reduce="none"``), read at
one position (default the last, where :class:`~probekit.tasks.PatchingPairs`
put their answers). :func:`make` builds one from the registry by name; any
other function of the logits works too (TransformerLens' convention).

The built-in metrics also take leading axes — logits ``[..., batch, pos,
d_vocab]`` of stacked patched copies give ``[...]`` (or ``[..., batch]``) —
and the :class:`Metric` that :func:`make` returns says which position it
reads, so batched patching evaluates many copies in one call and computes
the logits of that position only.

Normalized forms map the corrupt run to 0 and the clean run to 1 (Wang et al.
2022; Heimersheim & Nanda 2024, "How to use and interpret activation
patching").

Example:
    >>> logits = torch.randn(2, 5, 10)
    >>> m = make("logit-diff", answers=torch.tensor([1, 2]), wrong=torch.tensor([3, 4]))
    >>> m(logits).shape, m(torch.randn(7, 2, 5, 10)).shape, m.pos
    (torch.Size([]), torch.Size([7]), -1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from probekit.errors import ProbekitError, unknown

Reduce = Literal["mean", "none"]


@dataclass(frozen=True)
class Metric:
    """A metric of the logits that declares the one position it reads.

    Calling it is calling ``fn``. ``fn`` should accept logits ``[..., batch,
    pos, d_vocab]`` (leading axes: stacked copies, each evaluated on its own)
    and depend on position ``pos`` only; :func:`circuits.patch` then
    evaluates many patched copies at once and computes only that position's
    logits. It checks both on the base run first: a metric that mixes copies
    or refuses them is called once per copy, one that reads other positions
    gets every position's logits (each with a warning).

    Args:
        name: shown in results and reports.
        fn: the metric.
        pos: the position of the logits it reads (negative counts from the end).
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    pos: int = -1

    def __call__(self, logits: Tensor) -> Tensor:
        return self.fn(logits)

    @property
    def __name__(self) -> str:  # results name their metric by ``__name__``, as for plain functions
        return self.name


def _check_tokens(name: str, ids: Tensor, logits: Tensor) -> Tensor:
    ids = torch.as_tensor(ids, device=logits.device).long()
    if logits.ndim < 3:
        raise ProbekitError(f"logits must be [batch, pos, d_vocab], got shape {tuple(logits.shape)}")
    if ids.ndim != 1 or ids.shape[0] != logits.shape[-3]:
        raise ProbekitError(f"{name} must be one token id per example ({logits.shape[-3]}), got shape {tuple(ids.shape)}")
    d_vocab = logits.shape[-1]
    bad = (ids < 0) | (ids >= d_vocab)
    if bad.any():
        raise ProbekitError(f"{name} token id {int(ids[bad][0])} is out of vocabulary (valid: 0–{d_vocab - 1})")
    return ids


def _pick(last: Tensor, ids: Tensor) -> Tensor:
    """``last[..., b, ids[b]]``: each example's entry of ``[..., batch, d_vocab]``."""
    return last.gather(-1, ids.expand(last.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def _reduce(values: Tensor, reduce: Reduce) -> Tensor:
    """``values`` is ``[..., batch]``: the mean over the batch, or all of it."""
    if reduce == "mean":
        return values.mean(-1)
    if reduce == "none":
        return values
    raise unknown("reduce", str(reduce), ("mean", "none"))


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"],
    answers: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"],
    *,
    pos: int = -1,
    reduce: Reduce = "mean",
) -> Tensor:
    """Logit of the answer minus logit of the wrong answer at position ``pos``."""
    answers = _check_tokens("answers", answers, logits)
    wrong = _check_tokens("wrong", wrong, logits)
    last = logits[..., pos, :]
    return _reduce(_pick(last, answers) - _pick(last, wrong), reduce)


def logprob(
    logits: Float[Tensor, "batch pos d_vocab"],
    answers: Int[Tensor, " batch"],
    *,
    pos: int = -1,
    reduce: Reduce = "mean",
) -> Tensor:
    """Log-probability of the answer at position ``pos``."""
    answers = _check_tokens("answers", answers, logits)
    return _reduce(_pick(logits[..., pos, :].log_softmax(-1), answers), reduce)


def prob(
    logits: Float[Tensor, "batch pos d_vocab"],
    answers: Int[Tensor, " batch"],
    *,
    pos: int = -1,
    reduce: Reduce = "mean",
) -> Tensor:
    """Probability of the answer at position ``pos``."""
    return _reduce(logprob(logits, answers, pos=pos, reduce="none").exp(), reduce)


def kl_to_clean(
    logits: Float[Tensor, "batch pos d_vocab"],
    clean_logits: Float[Tensor, "batch pos d_vocab"],
    *,
    pos: int = -1,
    reduce: Reduce = "mean",
) -> Tensor:
    """KL(clean ‖ patched) of the next-token distributions at position ``pos`` (0 = clean)."""
    if clean_logits.ndim != 3 or logits.ndim < 3 or clean_logits.shape[0] != logits.shape[-3] \
            or clean_logits.shape[-1] != logits.shape[-1]:
        raise ProbekitError(
            f"clean logits of shape {tuple(clean_logits.shape)} do not match logits of shape {tuple(logits.shape)}"
        )
    p = clean_logits[:, pos, :].log_softmax(-1)
    q = logits[..., pos, :].log_softmax(-1)
    return _reduce((p.exp() * (p - q)).sum(-1), reduce)


def normalize(value: Tensor, clean: Tensor | float, corrupt: Tensor | float) -> Tensor:
    """Map ``value`` so the corrupt baseline is 0 and the clean one 1.

    Raises:
        ProbekitError: if the two baselines are equal (nothing to normalize by).
    """
    clean_t, corrupt_t = torch.as_tensor(clean), torch.as_tensor(corrupt)
    gap = clean_t - corrupt_t
    if (gap.abs() < 1e-12).any():
        raise ProbekitError(f"cannot normalize: the clean and corrupt baselines are equal ({float(clean_t.mean()):.4g})")
    return (value - corrupt_t.to(value.device)) / gap.to(value.device)


#: name -> one-line description (the registry behind ``--metric``)
METRICS: dict[str, str] = {
    "logit-diff": "logit of the answer minus logit of the wrong answer",
    "logprob": "log-probability of the answer",
    "prob": "probability of the answer",
    "kl": "KL divergence from the clean next-token distribution (0 = clean)",
}


def names() -> list[str]:
    """The registered metric names (the CLI's ``--metric`` choices)."""
    return list(METRICS)


def make(
    name: str,
    *,
    answers: Tensor | None = None,
    wrong: Tensor | None = None,
    clean_logits: Tensor | None = None,
    corrupt_logits: Tensor | None = None,
    normalized: bool = False,
    pos: int = -1,
    reduce: Reduce = "mean",
) -> Metric:
    """A metric by registry name, closed over its answers.

    It accepts logits with leading axes (``[..., batch, pos, d_vocab]``) and
    declares the position it reads (``.pos``).

    Args:
        name: one of :func:`names`.
        answers: the correct token per example (``logit-diff``, ``prob``, ``logprob``).
        wrong: the wrong token per example (``logit-diff``).
        clean_logits: logits of the clean run (``kl``; and ``normalized``).
        corrupt_logits: logits of the corrupt run (``normalized``).
        normalized: rescale so the corrupt run scores 0 and the clean run 1.
        pos: position the metric reads.
        reduce: ``"mean"`` (a scalar) or ``"none"`` (one value per example).

    Returns:
        A :class:`Metric`: a function of logits ``[batch, pos, d_vocab]``.
    """
    if name not in METRICS:
        raise unknown("metric", name, METRICS)
    if name in ("logit-diff", "prob", "logprob") and answers is None:
        raise ProbekitError(f"metric {name!r} needs answers")
    if name == "logit-diff" and wrong is None:
        raise ProbekitError("metric 'logit-diff' needs wrong answers")
    if name == "kl" and clean_logits is None:
        raise ProbekitError("metric 'kl' needs clean_logits")
    clean_logits = None if clean_logits is None else clean_logits.detach()

    def raw(logits: Tensor, red: Reduce = reduce) -> Tensor:
        if name == "logit-diff":
            return logit_diff(logits, answers, wrong, pos=pos, reduce=red)
        if name == "logprob":
            return logprob(logits, answers, pos=pos, reduce=red)
        if name == "prob":
            return prob(logits, answers, pos=pos, reduce=red)
        return kl_to_clean(logits, clean_logits.to(logits.device), pos=pos, reduce=red)

    if not normalized:
        return Metric(name, raw, pos)
    if clean_logits is None or corrupt_logits is None:
        raise ProbekitError("a normalized metric needs clean_logits and corrupt_logits")
    # baselines are batch means, so the mean of per-example normalized values is the normalized mean
    clean_v, corrupt_v = raw(clean_logits, "mean"), raw(corrupt_logits.detach(), "mean")

    def norm(logits: Tensor) -> Tensor:
        return normalize(raw(logits), clean_v, corrupt_v)

    return Metric(f"normalized {name}", norm, pos)


__all__ = ["METRICS", "Metric", "kl_to_clean", "logit_diff", "logprob", "make", "names", "normalize", "prob"]
