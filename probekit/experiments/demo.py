"""``probekit demo``: the main job, end to end on the built-in default.

Trains a 2-layer attention-only transformer on ``induction`` (DESIGN.md's
recipe), then: the loss curve; head scores (previous-token head in layer 0,
induction heads in layer 1); the attention dashboard; a probe sweep of the
previous token's identity over the residual stream with control task,
selectivity, MDL and erasure; and activation patching of every head and of
the residual stream on clean/corrupt induction prompts. Writes
``OUT/index.html`` with one offline page per part.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

import probekit as pk
from probekit.report import Report

log = logging.getLogger(__name__)


def run(
    out: str | Path = "report",
    *,
    quick: bool = False,
    steps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Run the demo and return the path of ``index.html``.

    Args:
        out: the report directory (the trained run goes to ``out/run``).
        quick: a smoke-test size (few steps, small data): every part runs, the
            heads may not have formed yet.
        steps: training steps (default: the task's recipe, or 300 with ``quick``).
        device: torch device.
        seed: seed of the model, data order and probes.
        progress: show progress bars.
    """
    import circuits
    import probes
    from probekit import heads, metrics
    from probekit.training import TrainConfig
    from probekit.viz.attention import dashboard

    out = Path(out)
    rep = Report(out, title="probekit demo: induction heads in a 2-layer attention-only transformer")
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(**task.default_model, d_vocab=task.d_vocab, seed=seed)
    model = pk.build_model(cfg, tokenizer=task.tokenizer(), device=device)
    train_cfg = TrainConfig(**{**task.default_training, "seed": seed})
    if quick or steps is not None:
        train_cfg = train_cfg.replace(steps=steps or 300)
    t0 = time.perf_counter()
    result = pk.train(model, task, train_cfg, out=out / "run", device=device, progress=progress)
    train_s = time.perf_counter() - t0
    hist = [h for h in result.history if "loss" in h]
    rep.add(
        "Training",
        text=f"{cfg.n_layers}-layer attention-only transformer (d_model {cfg.d_model}, {cfg.n_heads} heads) trained "
        f"on random tokens with a repeated segment; run directory: run/ (load it with probekit.load).",
        figures={"steps": result.steps, "final train loss": result.final_loss, "held-out loss": result.eval_loss,
                 "training time (s)": round(train_s, 1)},
        figure=pk.viz.line_figure(
            {"train loss": ([h["step"] for h in hist], [h["loss"] for h in hist]),
             "held-out loss": tuple(map(list, zip(*result.eval_history))) if result.eval_history else ([], [])},
            title="Loss", xaxis="step", yaxis="nats",
        ),
        page="training.html",
    )

    # Head scores on [BOS] A A sequences: which heads are previous-token / induction heads.
    rep_tokens = heads.repeated_tokens(model, seq_len=20, n=16, seed=seed)
    scores = heads.head_scores(model, rep_tokens)
    prev = scores.top("previous_token", 1)[0]
    ind = scores.top("induction", 1)[0]
    rep.add(
        "Head scores",
        text="Previous-token, duplicate-token and induction scores of every head (TransformerLens' head-detector "
        "definitions) on sequences whose second half repeats the first. Click a head to see its pattern.",
        figures={"best previous-token head": f"L{prev[0]}H{prev[1]} ({prev[2]:.2f})",
                 "best induction head": f"L{ind[0]}H{ind[1]} ({ind[2]:.2f})"},
        figure=pk.viz.head_scores(model, rep_tokens[:1], scores=scores),
        page="head_scores.html",
    )
    rep.add(
        "Attention",
        text="The attention dashboard on two repeated sequences: every layer and head (pick the example above the "
        "grid); head scores (click a head to open its pattern); one head's query x key pattern with the tokens on "
        "both axes (pick any layer and head); and the attention each query pays over the text (move the slider).",
        figures={"detail and token views open on": f"L{ind[0]}H{ind[1]}"},
        figure=dashboard(model, rep_tokens[:2], scores=scores, layer=ind[0], head=ind[1]),
        page="attention.html",
    )

    # Probes: is the previous token's identity linearly readable, and where?
    n_seq = 64 if quick else 256
    store = pk.cache_activations(model, task, "resid_post", n=n_seq, seed=seed + 1, device=device)
    sweep = probes.sweep(store, label="prev_token", model=model, n_boot=200, seed=seed, progress=progress)
    rep.add(
        "Probes: previous token",
        text="Logistic probes for the previous token's id on each residual layer, with a control task "
        "(Hewitt & Liang 2019), selectivity, MDL (Voita & Titov 2020) and LEACE erasure. The embedding holds only "
        "the current token; after layer 0 the previous-token head has written the previous one (compare the "
        "untrained model and the accuracy after erasure). Selectivity stays near 0: the control task gives each "
        "current token a random label, and a probe reads any function of the current token as well as it reads "
        "the previous one — the over-expressive probe the control task is there to expose.",
        figures=sweep.summary(),
        figure=sweep.figure(),
        page="probes.html",
    )

    # Patching: which heads carry the induction behaviour?
    pairs = task.patching_pairs(16 if quick else 32, seed=seed + 2)
    # a registry metric declares the one position it reads, so batched patching computes only that position
    metric = metrics.make("logit-diff", answers=pairs.answers.to(device), wrong=pairs.wrong.to(device))
    clean, corrupt = pairs.clean.to(device), pairs.corrupt.to(device)
    heads_res = circuits.patch(model, clean, corrupt, metric, target="heads", direction="noising", progress=progress)
    resid_res = circuits.patch(model, clean, corrupt, metric, target="resid", progress=progress)
    with torch.no_grad():
        clean_ld = float(metric(model(clean)))
        corrupt_ld = float(metric(model(corrupt)))
    rep.add(
        "Patching: heads",
        text="Noising: the clean run with one head's output (all positions) taken from the corrupt run, whose first "
        "copy of the segment is replaced. Large drops mark the heads the induction circuit runs through.",
        figures={"clean logit diff": clean_ld, "corrupt logit diff": corrupt_ld},
        figure=heads_res.figure(),
        page="patching_heads.html",
    )
    rep.add(
        "Patching: residual stream",
        text="Denoising (TransformerLens' convention): the corrupt run with the clean residual stream patched in "
        "at one layer and position.",
        figure=resid_res.figure(),
        page="patching_resid.html",
    )
    return rep.write()
