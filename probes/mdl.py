"""Minimum description length probing with the online code (Voita & Titov 2020).

Voita & Titov, "Information-Theoretic Probing with Minimum Description Length"
(EMNLP 2020): sort the data once, send the first block with a uniform code,
then each next block with a probe trained on everything sent so far. The
total is the online code length; compression = uniform code length / online
code length. A representation that makes the label easy to learn from few
examples compresses it more, which accuracy alone does not show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from probes.solvers import fit_logistic
from probes.trainer import standardizer

#: the block schedule of Voita & Titov: 0.1%, 0.2%, 0.4%, … 100% of the data
BLOCKS: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class MDLResult:
    """Online code per layer.

    Attributes:
        codelength: ``[layer]`` online code length in bits.
        uniform: code length of the uniform code, ``n * log2(classes)`` bits.
        compression: ``[layer]`` ``uniform / codelength``.
        blocks: the end row of each block.
    """

    codelength: Tensor
    uniform: float
    compression: Tensor
    blocks: tuple[int, ...]


def online_code(
    X: Float[Tensor, "layer n d_model"],
    y: Tensor,
    *,
    n_classes: int | None = None,
    C: float | Tensor = 1.0,
    schedule: tuple[float, ...] = BLOCKS,
    seed: int = 0,
    max_iter: int = 100,
) -> MDLResult:
    """Online code length of class labels ``y`` given each layer's activations.

    Args:
        X: ``[layer, n, d_model]`` activations (all layers coded at once).
        y: ``[n]`` class indices ``0 … n_classes-1``.
        n_classes: number of classes (default ``y.max() + 1``).
        C: regularisation of the block probes (scikit-learn's ``C``; one value or one per layer).
        schedule: fractions of the data where blocks end.
        seed: the order in which rows are sent.
        max_iter: L-BFGS iterations per block.
    """
    L, n, _ = X.shape
    K = int(n_classes if n_classes is not None else int(y.max()) + 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(X.device)
    X, y = X[:, perm], y.to(X.device)[perm]
    ends = sorted({max(1, min(n, math.ceil(f * n))) for f in schedule})
    Cl = torch.as_tensor(C, dtype=X.dtype, device=X.device).reshape(-1).expand(L).reshape(L, 1)
    bits = torch.full((L,), ends[0] * math.log2(K), dtype=torch.float64)
    for start, stop in zip(ends[:-1], ends[1:]):
        mean, scale = standardizer(X[:, :start])
        xs = (X[:, :stop] - mean[:, None]) / scale[:, None]
        fit = fit_logistic(xs[:, :start], y[:start], C=Cl,
                           mode="softmax", n_out=K, max_iter=max_iter)
        z = torch.einsum("lnd,ldo->lno", xs[:, start:stop], fit.coef[:, 0]) + fit.intercept[:, 0, None]
        logp = torch.log_softmax(z, -1).gather(-1, y[start:stop].view(1, -1, 1).expand(L, -1, 1))[..., 0]
        bits += (-logp.sum(1) / math.log(2)).double().cpu()
    uniform = n * math.log2(K)
    return MDLResult(codelength=bits, uniform=uniform, compression=uniform / bits, blocks=tuple(ends))
