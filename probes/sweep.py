"""Layer sweeps: one probe per layer, reported honestly.

``sweep(store, label=...)`` fits a probe on every residual layer of an
activation store at once (:class:`probes.trainer.BatchedProbeTrainer`) and
reports, per layer, held-out accuracy (R² for regression) with a bootstrap
interval, and by default the checks that say what the number means:

* control task and selectivity (Hewitt & Liang 2019) — :mod:`probes.control`;
* MDL online code length and compression (Voita & Titov 2020) — :mod:`probes.mdl`;
* baselines: the embeddings alone (the non-contextual baseline of Hewitt et al. 2021,
  "Conditional probing: measuring usable information beyond a baseline"), and the same
  probe on an untrained, randomly initialised copy of the model (Zhang & Bowman 2018,
  "Language Modeling Teaches You More than Translation Does", BlackboxNLP: random,
  frozen encoders already score strikingly well on syntactic probing tasks);
* LEACE erasure: a fresh probe after erasure (Belrose et al. 2023), and, given the
  model, amnesic probing at the best layer (Elazar et al. 2021) — :mod:`probes.erasure`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probekit.errors import ProbekitError
from probes.control import (CONTROL_ONE_CLASS, control_has_one_class, control_keys, control_labels, majority_rate,
                            selectivity)
from probes.erasure import InterventionResult, amnesic_check, eraser_rank, fit_eraser, leace_check, leace_hook
from probes.mdl import online_code
from probes.stats import bootstrap_ci
from probes.trainer import BatchedProbeTrainer, ProbeConfig, check_stack, encode

log = logging.getLogger(__name__)

#: the regularisation grid a sweep cross-validates over by default
SWEEP_CS: tuple[float, ...] = (0.01, 0.1, 1.0)


@dataclass
class SweepResult:
    """Per-layer probe scores with their controls (lists indexed like ``layers``).

    Attributes:
        label: the probed label; kind: ``logistic`` or ``ridge``; metric: ``accuracy`` or ``r2``.
        layers: layer labels (``embed``, ``L0`` …); hooks: their TransformerLens names.
        score, ci_low, ci_high: held-out score and its bootstrap interval.
        chance: test accuracy of always predicting the training majority class (0 for R²).
        control_score, selectivity: control task (``None`` when off).
        mdl_bits, compression, uniform_bits: online code (classification; ``None`` when off).
        untrained_score: the same probes on an untrained copy of the model (``None`` when unavailable).
        embed_score: the probe on the embeddings alone.
        erased_score: a fresh probe after LEACE erasure of the label.
        interventions: amnesic/steering checks on the model (given a model).
        C: regularisation chosen per layer.
        n_train, n_test: rows; fingerprint: the model's, if the store records it.
    """

    label: str
    kind: str
    metric: str
    layers: list[str]
    hooks: list[str]
    score: list[float]
    ci_low: list[float]
    ci_high: list[float]
    chance: float
    control_score: list[float] | None = None
    selectivity: list[float] | None = None
    mdl_bits: list[float] | None = None
    compression: list[float] | None = None
    uniform_bits: float | None = None
    untrained_score: list[float] | None = None
    embed_score: float | None = None
    erased_score: list[float] | None = None
    interventions: list[dict] = field(default_factory=list)
    C: list[float] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0
    fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepResult:
        return cls(**d)

    def to_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p

    def summary(self) -> dict[str, str]:
        """A few headline numbers for a report: best layer, its score, control and selectivity."""
        i = self.layers.index(self.best_layer())
        out = {"best layer": self.layers[i],
               self.metric: f"{self.score[i]:.3f} [{self.ci_low[i]:.3f}, {self.ci_high[i]:.3f}]"}
        if self.metric == "accuracy":
            out["majority class"] = f"{self.chance:.3f}"
        if self.control_score is not None:
            out["control"] = f"{self.control_score[i]:.3f}"
            out["selectivity"] = f"{self.selectivity[i]:.3f}"
        if self.untrained_score is not None:
            out["untrained model"] = f"{self.untrained_score[i]:.3f}"
        if self.erased_score is not None:
            out["after LEACE"] = f"{self.erased_score[i]:.3f}"
        return out

    def best_layer(self) -> str:
        """The layer with the highest selectivity (or score, without a control)."""
        key = self.selectivity if self.selectivity is not None else self.score
        return self.layers[int(np.argmax(key))]

    def table(self) -> str:
        """A markdown table of the per-layer numbers."""
        cols = [("layer", self.layers), (self.metric, self.score),
                ("95% CI", [f"[{a:.3f}, {b:.3f}]" for a, b in zip(self.ci_low, self.ci_high)])]
        for name, vals in (("control", self.control_score), ("selectivity", self.selectivity),
                           ("compression", self.compression), ("untrained", self.untrained_score),
                           ("after LEACE", self.erased_score)):
            if vals is not None:
                cols.append((name, vals))
        fmt = [[v if isinstance(v, str) else f"{v:.3f}" for v in vals] for _, vals in cols]
        lines = ["| " + " | ".join(n for n, _ in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(col[i] for col in fmt) + " |" for i in range(len(self.layers))]
        return "\n".join(lines)

    def figure(self):
        """A Plotly figure of the sweep (drawn by :func:`probekit.viz.sweep_figure`)."""
        from probekit.viz import sweep_figure

        return sweep_figure(
            self.layers, self.score, ci_low=self.ci_low, ci_high=self.ci_high, control=self.control_score,
            selectivity=self.selectivity, untrained=self.untrained_score, erased=self.erased_score,
            chance=self.chance, metric=self.metric, title=f"probe sweep: {self.label}")


def _split(example_id: torch.Tensor, test_fraction: float, seed: int) -> torch.Tensor:
    """A test mask holding out whole examples (tokens of one sequence stay together)."""
    ex = torch.unique(example_id)
    g = torch.Generator().manual_seed(seed)
    n_test = max(1, int(round(test_fraction * len(ex))))
    if n_test >= len(ex):
        raise ProbekitError(f"need at least 2 examples to hold some out, got {len(ex)}")
    test_ex = ex[torch.randperm(len(ex), generator=g)[:n_test]]
    return torch.isin(example_id, test_ex)


def sweep(
    store,
    label: str,
    *,
    layers: list[str] | None = None,
    control: bool = True,
    mdl: bool = True,
    ci: bool = True,
    baselines: bool = True,
    erasure: bool = True,
    causal: bool = True,
    model=None,
    config: ProbeConfig | None = None,
    test_fraction: float = 0.2,
    n_boot: int = 1000,
    cv_rows: int | None = 2000,
    seed: int = 0,
    progress: bool = False,
) -> SweepResult:
    """Probe ``label`` on every layer of ``store``, with controls (all on by default).

    Args:
        store: an :class:`probekit.ActivationStore`.
        label: a label of the store.
        layers: layers to probe (default: every residual layer, ``embed`` first).
        control: fit the control task and report selectivity (Hewitt & Liang 2019).
        mdl: online code length (Voita & Titov 2020; classification only).
        ci: bootstrap interval of the held-out score (whole examples resampled).
        baselines: the probe on an untrained copy of the model (needs ``model``
            or a store whose manifest names its ``model_source``).
        erasure: LEACE erasure then a fresh probe per layer (Belrose et al. 2023).
        causal: amnesic check (Elazar et al. 2021) at the best layer (needs the model).
        model: the model the store came from (overrides the manifest's source).
        config: probe settings (default: logistic for classification labels,
            ridge for regression, C by 3-fold cross-validation over ``SWEEP_CS``).
        test_fraction: fraction of examples held out for scoring.
        n_boot: bootstrap resamples.
        cv_rows: choose C by cross-validation on at most this many training rows
            (a random subset), then refit every layer on all of them with its C;
            ``None`` cross-validates on all rows.
        seed: seed of the split, the control task and the bootstrap.
        progress: show a progress bar.

    Example:
        >>> res = sweep(store, label="depth")          # doctest: +SKIP
        >>> res.figure().show()                        # doctest: +SKIP
    """
    values, defined = store.label(label)
    kind_of = store.label_kinds.get(label, "classification")
    config = config or ProbeConfig(kind="logistic" if kind_of == "classification" else "ridge", Cs=SWEEP_CS)
    if kind_of == "regression" and config.kind == "logistic":
        raise ProbekitError(f"label {label!r} is a regression target; use kind='ridge'")
    layers = layers or store.layers()
    if not layers:
        raise ProbekitError(f"the store has no residual layers to sweep (hooks: {', '.join(store.hooks)})")
    refs = [store.ref(s) for s in layers]
    rows = defined.nonzero().flatten()
    y = values[rows]
    if config.kind == "logistic" and len(torch.unique(y)) < 2:
        raise ProbekitError(f"label {label!r} has one class ({int(y[0])}) on the defined rows; a probe needs two")
    X = check_stack(torch.stack([store.layer(s)[rows] for s in layers]))
    test = _split(store.example_id[rows], test_fraction, seed)
    tr, te = (~test).nonzero().flatten(), test.nonzero().flatten()
    trainer = BatchedProbeTrainer(config)
    steps = 1 + control + (mdl and config.kind == "logistic") + erasure + (baselines and _has_model(store, model))
    bar = tqdm(total=steps, disable=not progress, desc=f"sweep {label}")

    if config.C is None and config.kind == "logistic" and cv_rows is not None and len(tr) > cv_rows:
        sub = tr[torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed))[:cv_rows]]
        fit = trainer.fit(X[:, tr], y[tr], C=trainer.fit(X[:, sub], y[sub]).C[:, 0])
    else:
        fit = trainer.fit(X[:, tr], y[tr])
    score = fit.score(X[:, te], y[te]).cpu()
    metric = "accuracy" if config.kind == "logistic" else "r2"
    y_te = encode(y[te], fit.classes) if fit.classes is not None else y[te].float()
    if ci:
        pred = fit.predict_index(X[:, te]).cpu()
        if pred.ndim == 3:  # one regression target: [layer, n, 1]
            pred = pred[..., 0]
        lo, hi = bootstrap_ci(pred.float(), y_te.float(), metric=metric, n_boot=n_boot, seed=seed,
                              groups=store.example_id[rows][te])
    else:
        lo, hi = score, score
    chance = majority_rate(y[tr], y[te]) if metric == "accuracy" else 0.0
    fp = store_fingerprint(store)
    res = SweepResult(label=label, kind=config.kind, metric=metric, layers=[r.label or s for r, s in zip(refs, layers)],
                      hooks=[r.name for r in refs], score=score.tolist(), ci_low=lo.tolist(), ci_high=hi.tolist(),
                      chance=chance, C=fit.C[:, 0].tolist(), n_train=len(tr), n_test=len(te), fingerprint=fp)
    bar.update()
    # controls, baselines and erasure use each layer's chosen C: the same probe complexity
    layer_C = fit.C[:, 0]
    if "embed" in res.layers:
        res.embed_score = res.score[res.layers.index("embed")]
    if control:
        keys = control_keys(store.token[rows], store.position[rows], store.manifest.get("control_key", "token"))
        yc = control_labels(keys, y, seed=seed)
        if config.kind == "logistic" and control_has_one_class(yc[tr]):
            log.warning(CONTROL_ONE_CLASS, len(torch.unique(keys[tr])))
        else:
            cscore = trainer.fit(X[:, tr], yc[tr], C=layer_C).score(X[:, te], yc[te]).cpu()
            res.control_score = cscore.tolist()
            res.selectivity = selectivity(score, cscore).tolist()
        bar.update()
    if mdl and config.kind == "logistic":
        code = online_code(X[:, tr].to(config.device), encode(y[tr], fit.classes).to(config.device),
                           n_classes=len(fit.classes), C=layer_C, seed=seed)
        res.mdl_bits, res.compression, res.uniform_bits = code.codelength.tolist(), code.compression.tolist(), code.uniform
        bar.update()
    if erasure:
        er = leace_check(X[:, tr], y[tr], X[:, te], y[te], config=config, C=layer_C)
        res.erased_score = er.after.tolist()
        bar.update()
    model = model if model is not None else _model_from_manifest(store)
    if baselines and model is not None:
        res.untrained_score = _untrained_scores(store, model, refs, rows, tr, te, y, config, layer_C)
        bar.update()
    if causal and model is not None and config.kind == "logistic":
        res.interventions = [_amnesic(store, model, res, X, tr, y, seed)]
    bar.close()
    return res


def store_fingerprint(store) -> str | None:
    """The fingerprint of the model a store was cached from, if its manifest records one."""
    m = store.manifest
    return m.get("fingerprint") or (m.get("model") or {}).get("fingerprint")


def _source(store) -> dict:
    m = store.manifest
    src = (m.get("model") or {}).get("source") or m.get("model_source")
    return src if isinstance(src, dict) else ({"path": src} if src else {})


def _has_model(store, model) -> bool:
    return model is not None or bool(_source(store).get("path"))


def _model_from_manifest(store):
    path = _source(store).get("path")
    if not path:
        return None
    try:
        import probekit as pk

        model = pk.load(path)
    except Exception as e:  # the baseline is optional: say why it is missing
        log.warning("cannot rebuild the model from %r for the baselines: %s", path, e)
        return None
    if store_fingerprint(store) not in (None, _fingerprint(model)):
        log.warning("the model at %r no longer matches the store's fingerprint; baselines skipped", path)
        return None
    return model


def _fingerprint(model) -> str:
    from probekit.model import fingerprint

    return fingerprint(model)


def untrained_copy(model):
    """A randomly initialised model of the same shape and tokenizer (``probekit.loading.untrained_copy``).

    The random-weights baseline of Zhang & Bowman (2018), "Language Modeling Teaches
    You More than Translation Does: Lessons Learned Through Auxiliary Syntactic Task
    Analysis" (BlackboxNLP; arXiv:1809.10040): what a probe reads from an untrained
    network of the same architecture comes from the input and the architecture, not
    from training.
    """
    from probekit.loading import untrained_copy as uc

    return uc(model)


def _task_batch_tokens(store, n: int | None = None):
    import probekit as pk

    m = store.manifest
    if "task" not in m:
        raise ProbekitError("the store's manifest names no task; pass a store cached from a task")
    task = pk.tasks.from_dict(m["task"])
    return task, task.batch(n or m.get("n", 64), m.get("seed", 0), m.get("split", "test"))


def _untrained_scores(store, model, refs, rows, tr, te, y, config, layer_C) -> list[float] | None:
    """Held-out scores of the same probes (same rows, split and C) on an untrained copy (Zhang & Bowman 2018)."""
    import probekit as pk

    m = store.manifest
    try:
        task, _ = _task_batch_tokens(store)
    except ProbekitError as e:
        log.warning("untrained baseline skipped: %s", e)
        return None
    base = untrained_copy(model)
    other = pk.cache_activations(base, task, hooks=[r.name for r in refs], n=m.get("n", 64),
                                 seed=m.get("seed", 0), split=m.get("split", "test"))
    if len(other) != len(store):
        log.warning("untrained copy cached %d rows, the store has %d; baseline skipped", len(other), len(store))
        return None
    Xu = check_stack(torch.stack([other.acts[r.name].reshape(len(other), -1)[rows] for r in refs]))
    fit = BatchedProbeTrainer(config).fit(Xu[:, tr], y[tr], C=layer_C)
    return fit.score(Xu[:, te], y[te]).cpu().tolist()


def _amnesic(store, model, res: SweepResult, X, tr, y, seed) -> dict:
    """LEACE inside the model at the best layer vs. random erasures of the same rank."""
    i = res.layers.index(res.best_layer())
    eraser = fit_eraser(X[i, tr], y[tr])
    _, batch = _task_batch_tokens(store, n=min(32, store.manifest.get("n", 32)))
    rank = eraser_rank(eraser)
    out: InterventionResult = amnesic_check(model, batch.tokens, res.hooks[i], leace_hook(eraser), rank=rank,
                                            center=X[i, tr].mean(0), mask=batch.mask, seed=seed)
    return out.to_dict() | {"layer": res.layers[i]}


def demo_section(store, label: str, model=None, **kwargs):
    """The probe part of ``probekit demo``: a sweep and its figure.

    Args:
        store: activations of a trained model on a task (e.g. ``parens``).
        label: the label to probe (e.g. ``depth``).
        model: the model (for the untrained baseline and the amnesic check).
        **kwargs: passed to :func:`sweep`.

    Returns:
        ``(SweepResult, plotly Figure)``.
    """
    kwargs.setdefault("n_boot", 300)
    kwargs.setdefault("config", None)
    if kwargs["config"] is None:  # a small grid keeps the demo to seconds
        kind = "logistic" if store.label_kinds.get(label, "classification") == "classification" else "ridge"
        kwargs["config"] = ProbeConfig(kind=kind, Cs=(0.1, 1.0), cv=2)
    res = sweep(store, label, model=model, **kwargs)
    return res, res.figure()

