"""Causal checks: concept erasure with LEACE and interventions along probe directions.

* LEACE (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed
  form", via the ``concept-erasure`` package): the least-squares edit of the
  activations after which *no* linear probe beats a constant predictor. A
  fresh probe trained on erased activations should score at the majority rate.
* Amnesic probing (Elazar et al. 2021, "Amnesic Probing: Behavioral
  Explanation with Amnesic Counterfactuals", TACL): erase the property inside
  the running model and measure how much the model's own next-token
  predictions change, compared with erasing random directions of the same
  rank. Steering adds the probe direction instead of removing it.

Hooks are global state on the model: they are only added inside
``model.hooks(...)``, which removes them when the block exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from concept_erasure import LeaceEraser
from jaxtyping import Float, Int
from torch import Tensor

from probekit.errors import ProbekitError
from probes.control import majority_rate
from probes.trainer import BatchedProbeTrainer, ProbeConfig, encode


def fit_eraser(X: Float[Tensor, "n d_model"], y: Tensor, *, kind: str = "logistic") -> LeaceEraser:
    """A LEACE eraser for class labels (one-hot) or regression targets ``y``."""
    X = X.double()
    if kind == "logistic":
        classes = torch.unique(y)
        z = torch.nn.functional.one_hot(encode(y, classes.numpy()), len(classes)).double()
    else:
        z = y.double().reshape(len(y), -1)
    return LeaceEraser.fit(X, z)


def eraser_rank(eraser: LeaceEraser) -> int:
    """Number of directions a LEACE eraser removes (at most classes - 1)."""
    return int(torch.linalg.matrix_rank(eraser.proj_left @ eraser.proj_right))


@dataclass(frozen=True)
class ErasureResult:
    """A fresh probe before and after LEACE, per layer.

    Attributes:
        before, after: ``[layer]`` held-out accuracy (R² for ridge).
        chance: test accuracy of predicting the training majority class (0 for R²).
        rank: ``[layer]`` rank of the erased subspace.
    """

    before: Tensor
    after: Tensor
    chance: float
    rank: Tensor


def leace_check(
    X_train: Float[Tensor, "layer n d_model"],
    y_train: Tensor,
    X_test: Float[Tensor, "layer m d_model"],
    y_test: Tensor,
    *,
    config: ProbeConfig | None = None,
    C: Tensor | None = None,
) -> ErasureResult:
    """Fit LEACE on the training rows of each layer, erase, and train a fresh probe.

    Args:
        X_train, y_train: rows the eraser and probes are fitted on.
        X_test, y_test: held-out rows they are scored on.
        config: probe settings (default: logistic, C chosen by CV).
        C: ``[layer]`` fixed C per layer instead of cross-validation.
    """
    config = config or ProbeConfig()
    trainer = BatchedProbeTrainer(config)
    before = trainer.fit(X_train, y_train, C=C).score(X_test, y_test).cpu()
    erased_tr, erased_te, ranks = [], [], []
    for layer in range(X_train.shape[0]):
        eraser = fit_eraser(X_train[layer], y_train, kind=config.kind)
        erased_tr.append(eraser(X_train[layer].double()).float())
        erased_te.append(eraser(X_test[layer].double()).float())
        ranks.append(eraser_rank(eraser))
    after = trainer.fit(torch.stack(erased_tr), y_train, C=C).score(torch.stack(erased_te), y_test).cpu()
    chance = majority_rate(y_train, y_test) if config.kind == "logistic" else 0.0
    return ErasureResult(before=before, after=after, chance=chance, rank=torch.tensor(ranks))


def project_out(basis: Float[Tensor, "d_model k"], center: Float[Tensor, " d_model"] | None = None):
    """A hook function removing the span of ``basis`` (orthogonal projection about ``center``)."""
    Q, _ = torch.linalg.qr(basis)

    def fn(x, hook=None):
        c = center.to(x) if center is not None else 0.0
        q = Q.to(x)
        return x - ((x - c) @ q) @ q.T
    return fn


def add_direction(direction: Float[Tensor, " d_model"], alpha: float):
    """A hook function adding ``alpha * direction`` at every position (steering)."""
    def fn(x, hook=None):
        return x + alpha * direction.to(x)
    return fn


def leace_hook(eraser: LeaceEraser):
    """A hook function applying a LEACE eraser to every position."""
    def fn(x, hook=None):
        return eraser(x.double()).to(x.dtype)
    return fn


@dataclass(frozen=True)
class InterventionResult:
    """How much an edit at one hook changes the model's next-token predictions.

    Attributes:
        hook: the TransformerLens hook edited.
        edit: ``"leace"``, ``"probe_directions"`` (orthogonal removal of the
            probe's span) or ``"steer"``.
        rank: number of directions edited.
        kl: mean KL(original || edited) of the next-token distributions, nats.
        loss_delta: change of the next-token loss, nats.
        kl_random: the same KL for each random edit of the same rank / norm.
        loss_delta_random: the same loss change for each random edit.
    """

    hook: str
    edit: str
    rank: int
    kl: float
    loss_delta: float
    kl_random: list[float] = field(default_factory=list)
    loss_delta_random: list[float] = field(default_factory=list)

    @property
    def kl_ratio(self) -> float:
        """KL of the edit divided by the mean KL of the random edits."""
        r = sum(self.kl_random) / max(len(self.kl_random), 1)
        return self.kl / r if r > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"hook": self.hook, "edit": self.edit, "rank": self.rank, "kl": self.kl,
                "loss_delta": self.loss_delta, "kl_random": self.kl_random,
                "loss_delta_random": self.loss_delta_random, "kl_ratio": self.kl_ratio}


def _effect(model, tokens: Tensor, hook: str, fn, base_logp: Tensor, mask: Tensor) -> tuple[float, float]:
    with torch.no_grad(), model.hooks(fwd_hooks=[(hook, fn)]):
        logp = torch.log_softmax(model(tokens).float(), -1)
    kl = (base_logp.exp() * (base_logp - logp)).sum(-1)[mask].mean()
    nxt = tokens[:, 1:]
    base_loss = -base_logp[:, :-1].gather(-1, nxt[..., None])[..., 0][mask[:, 1:]].mean()
    loss = -logp[:, :-1].gather(-1, nxt[..., None])[..., 0][mask[:, 1:]].mean()
    return float(kl), float(loss - base_loss)


def amnesic_check(
    model,
    tokens: Int[Tensor, "batch pos"],
    hook: str,
    edit,
    *,
    rank: int,
    kind: str = "erase",
    alpha: float | None = None,
    center: Tensor | None = None,
    mask: Tensor | None = None,
    n_random: int = 5,
    seed: int = 0,
    name: str = "leace",
) -> InterventionResult:
    """Edit the activations at ``hook`` inside the model and compare with random edits.

    Args:
        model: a TransformerBridge.
        tokens: ``[batch, pos]`` inputs.
        hook: the TransformerLens hook name to edit (e.g. ``blocks.1.hook_resid_post``).
        edit: a hook function ``fn(x, hook) -> x`` (from :func:`leace_hook`,
            :func:`project_out` or :func:`add_direction`).
        rank: directions edited; random controls remove ``rank`` random
            orthonormal directions (``kind="erase"``) or add a random direction
            of the same norm ``alpha`` (``kind="steer"``).
        kind: ``"erase"`` or ``"steer"``.
        alpha: steering norm (``kind="steer"``).
        center: the activation mean, about which random projections remove.
        mask: ``[batch, pos]`` positions to average over (default: all).
        n_random: random edits to compare with.
        seed: seed of the random directions.
        name: what to call ``edit`` in the result.
    """
    if kind not in ("erase", "steer"):
        raise ProbekitError(f"kind must be 'erase' or 'steer', got {kind!r}")
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.to(device)
    with torch.no_grad():
        base_logp = torch.log_softmax(model(tokens).float(), -1)
    kl, dloss = _effect(model, tokens, hook, edit, base_logp, mask)
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(seed)
    kls, dls = [], []
    for _ in range(n_random):
        if kind == "erase":
            fn = project_out(torch.randn(d, rank, generator=g), center)
        else:
            v = torch.randn(d, generator=g)
            fn = add_direction(v / v.norm(), float(alpha))
        k, dl = _effect(model, tokens, hook, fn, base_logp, mask)
        kls.append(k)
        dls.append(dl)
    return InterventionResult(hook=hook, edit=name, rank=rank, kl=kl, loss_delta=dloss,
                              kl_random=kls, loss_delta_random=dls)
