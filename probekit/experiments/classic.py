"""The classic findings, one command each (``probekit experiment NAME``).

* ``induction`` — induction heads form in a 2-layer attention-only model, in a
  phase change (Olsson et al. 2022, "In-context learning and induction heads").
* ``scaling`` — held-out loss falls as a power of model size (Kaplan et al.
  2020), on real text.
* ``grokking`` — on modular addition, train accuracy saturates long before
  test accuracy (Power et al. 2022; Nanda et al. 2023).
* ``probing`` — a world model: the agent's (x, y) in ``gridworld`` is linearly
  decodable from the residual stream, with control tasks (Hewitt & Liang 2019)
  showing it is not memorised token identity (cf. Li et al. 2023, Othello-GPT).

Each ``run(out, *, quick=False, device="cpu", seed=0, progress=True)`` trains
what it needs, writes a report directory and returns ``index.html``'s path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

import probekit as pk
from probekit.report import Report

log = logging.getLogger(__name__)


def _model(task, device: str, seed: int, **overrides):
    cfg = pk.ModelConfig(**{**task.default_model, **overrides}, d_vocab=task.d_vocab, seed=seed)
    return pk.build_model(cfg, tokenizer=task.tokenizer(), device=device), cfg


def _train_config(task, seed: int, **overrides):
    from probekit.training import TrainConfig

    return TrainConfig(**{**task.default_training, "seed": seed, **overrides})


def induction(out: str | Path, *, quick: bool = False, device: str = "cpu", seed: int = 0, progress: bool = True) -> Path:
    """Track head scores and in-context loss while a 2-layer attention-only model trains on ``induction``."""
    from probekit import heads

    task = pk.tasks.get("induction")
    model, cfg = _model(task, device, seed)
    steps = 300 if quick else task.default_training["steps"]
    every = max(steps // 20, 10)
    probe_tokens = heads.repeated_tokens(model, seq_len=20, n=16, seed=seed + 1).to(device)
    half = probe_tokens.shape[1] // 2 + 1

    def measure(step: int, m) -> dict[str, float]:
        s = heads.head_scores(m, probe_tokens)
        with torch.no_grad():
            logp = m(probe_tokens).log_softmax(-1)
        nll = -logp[:, :-1].gather(-1, probe_tokens[:, 1:, None])[..., 0]
        return {"prev_token_L0": float(s.get("previous_token")[0].max()),
                "induction_L1": float(s.get("induction")[cfg.n_layers - 1].max()),
                "loss_second_half": float(nll[:, half:].mean()), "loss_first_half": float(nll[:, 1 : half - 1].mean())}

    result = pk.train(model, task, _train_config(task, seed, steps=steps, eval_every=every), out=Path(out) / "run",
                      device=device, progress=progress, callback=measure)
    rows = [h for h in result.history if "induction_L1" in h]
    step = [r["step"] for r in rows]
    formed = next((r["step"] for r in rows if r["induction_L1"] > 0.5), None)
    rep = Report(out, title="Induction heads form in a phase change")
    rep.add("Head scores during training",
            text="Best previous-token score in layer 0 and best induction score in layer 1 on [BOS] A A sequences "
            "(TransformerLens' head-detector definitions), and the loss on the first and the repeated half.",
            figures={"steps": result.steps, "induction score > 0.5 from step": formed,
                     "final induction score": rows[-1]["induction_L1"], "final previous-token score": rows[-1]["prev_token_L0"],
                     "loss on repeated half": rows[-1]["loss_second_half"], "loss on first half": rows[-1]["loss_first_half"]},
            figure=pk.viz.line_figure({k: (step, [r[k] for r in rows]) for k in
                                       ("prev_token_L0", "induction_L1", "loss_second_half", "loss_first_half")},
                                      title="Phase change", xaxis="step"),
            page="phase_change.html")
    tokens = probe_tokens[:1]
    rep.add("Head scores at the end", figure=pk.viz.head_scores(model, tokens, scores=heads.head_scores(model, probe_tokens)),
            page="head_scores.html")
    return rep.write()


def scaling(out: str | Path, *, quick: bool = False, device: str = "cpu", seed: int = 0, progress: bool = True) -> Path:
    """Held-out loss against non-embedding parameters for 2-layer models of growing width on ``text``."""
    task = pk.tasks.get("text")
    widths = [16, 32] if quick else [16, 32, 64, 128]
    steps = 100 if quick else 800
    params, losses = [], []
    for d in widths:
        model, cfg = _model(task, device, seed, d_model=d, n_heads=max(d // 16, 1))
        result = pk.train(model, task, _train_config(task, seed, steps=steps), device=device, progress=progress)
        n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and "pos" not in name
                and "unembed" not in name and "head." not in name)
        params.append(n)
        losses.append(result.eval_loss)
    # power-law fit loss ≈ a · N^-alpha (least squares in log space)
    x = torch.log(torch.tensor(params, dtype=torch.float64))
    y = torch.log(torch.tensor(losses, dtype=torch.float64))
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    rep = Report(out, title="Scaling: held-out loss against model size")
    rep.add("Loss against non-embedding parameters",
            text=f"2-layer models of width {widths} trained {steps} steps each on Python source (the text task).",
            figures={"widths": widths, "non-embedding parameters": params, "held-out loss": losses,
                     "power-law exponent (loss ∝ N^-α), α": -slope},
            figure=pk.viz.line_figure({"held-out loss": (params, losses)}, title="Scaling", xaxis="non-embedding parameters",
                                      yaxis="nats", log_x=True, log_y=True),
            page="scaling.html")
    return rep.write()


def grokking(out: str | Path, *, quick: bool = False, device: str = "cpu", seed: int = 0, progress: bool = True) -> Path:
    """Train and test accuracy on ``modular`` over training: memorization, then (with weight decay) generalization."""
    task = pk.tasks.get("modular")
    model, cfg = _model(task, device, seed)
    steps = 300 if quick else task.default_training["steps"]
    every = max(steps // 30, 10)
    sets = {s: task.all_pairs(s).to(device) for s in ("train", "test")}

    def measure(step: int, m) -> dict[str, float]:
        with torch.no_grad():
            return {f"{s}_acc": float((m(t[:, :5])[:, -1].argmax(-1) == t[:, 5]).float().mean()) for s, t in sets.items()}

    result = pk.train(model, task, _train_config(task, seed, steps=steps, eval_every=every), device=device,
                      progress=progress, callback=measure)
    rows = [h for h in result.history if "test_acc" in h]
    step = [r["step"] for r in rows]
    first = lambda k: next((r["step"] for r in rows if r[k] >= 0.99), None)  # noqa: E731
    rep = Report(out, title="Memorization versus generalization on modular addition")
    rep.add("Accuracy during training",
            text=f"a + b mod {task.p}, {task.train_fraction:.0%} of the pairs for training, weight decay "
            f"{task.default_training['weight_decay']}; accuracy on every train and every held-out pair.",
            figures={"steps": steps, "train accuracy ≥ 99% from step": first("train_acc"),
                     "test accuracy ≥ 99% from step": first("test_acc"),
                     "final train accuracy": rows[-1]["train_acc"], "final test accuracy": rows[-1]["test_acc"]},
            figure=pk.viz.line_figure({"train": (step, [r["train_acc"] for r in rows]),
                                       "test": (step, [r["test_acc"] for r in rows])},
                                      title="Grokking", xaxis="step", yaxis="accuracy"),
            page="accuracy.html")
    return rep.write()


def probing(out: str | Path, *, quick: bool = False, device: str = "cpu", seed: int = 0, progress: bool = True) -> Path:
    """World-state probes: the agent's x and y in ``gridworld`` per layer, with control tasks and selectivity."""
    import probes

    task = pk.tasks.get("gridworld")
    model, cfg = _model(task, device, seed)
    steps = 200 if quick else task.default_training["steps"]
    pk.train(model, task, _train_config(task, seed, steps=steps), out=Path(out) / "run", device=device, progress=progress)
    store = pk.cache_activations(model, task, "resid_post", n=64 if quick else 256, seed=seed + 1, device=device)
    rep = Report(out, title="A world model in gridworld: where is the agent?")
    for label in ("x", "y"):
        res = probes.sweep(store, label=label, model=model, seed=seed, n_boot=200, progress=progress)
        rep.add(f"Probe: {label}",
                text="Logistic probes per residual layer; the control task gives each (token, position) a random "
                "label, so selectivity says how much is more than memorised token identity.",
                figures=res.summary(),
                figure=res.figure(), page=f"probe_{label}.html")
    return rep.write()
