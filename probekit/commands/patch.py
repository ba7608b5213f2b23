"""``probekit patch``: activation patching of a model on a task's clean/corrupt pairs → JSON + HTML heatmap."""

from __future__ import annotations

from pathlib import Path

import typer

from probekit.commands._help import lazy_help

#: CLI metric name -> registry name in probekit.metrics
_CLI_METRICS = ("logit-diff", "prob", "logprob", "kl")


def run_patch(model, task, *, target: str, direction: str = "denoising", metric: str = "logit-diff", n: int = 16,
              seed: int = 0, normalized: bool = False, progress: bool = False):
    """Patch ``model`` on ``n`` of ``task``'s pairs; the :class:`circuits.PatchResult` (shared with ``probekit demo``)."""
    import torch

    import circuits
    from probekit import metrics

    pairs = task.patching_pairs(n, seed)
    device = model.cfg.device
    clean, corrupt = pairs.clean.to(device), pairs.corrupt.to(device)
    with torch.no_grad():
        clean_logits, corrupt_logits = model(clean), model(corrupt)
    m = metrics.make(metric, answers=pairs.answers.to(device), wrong=pairs.wrong.to(device), clean_logits=clean_logits,
                     corrupt_logits=corrupt_logits, normalized=normalized, reduce="none")
    return circuits.patch(model, clean, corrupt, m, target=target, direction=direction, per_example=True,
                          progress=progress)


def _targets() -> str:
    from circuits import targets  # imports torch: only for the command's own help page

    return ", ".join(targets.names())


def _metrics() -> str:
    from probekit import metrics

    return ", ".join(metrics.names())


def register(app: typer.Typer) -> None:
    @app.command("patch", cls=lazy_help(targets=_targets, metrics=_metrics))
    def patch_cmd(
        model: Path = typer.Option(..., "--model", help="run directory or local Hugging Face directory"),
        task: str = typer.Option(..., "--task", help="built-in task giving clean/corrupt pairs"),
        target: str = typer.Option("resid", "--target", help="what to patch: {targets}"),
        out: Path = typer.Option(..., "--out", help="directory for patch.json and patch.html"),
        direction: str = typer.Option("denoising", "--direction", help="denoising (corrupt run, clean activations) or noising"),
        metric: str = typer.Option("logit-diff", "--metric", help="metric: {metrics}"),
        n: int = typer.Option(16, "--n", help="number of clean/corrupt pairs"),
        seed: int = typer.Option(0, "--seed", help="seed of the pairs"),
        normalized: bool = typer.Option(False, "--normalized", help="rescale the metric: corrupt = 0, clean = 1"),
        device: str = typer.Option("cpu", "--device", help="torch device"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Activation patching on a task's clean/corrupt pairs: writes patch.json and an HTML heatmap."""
        import json

        import probekit as pk
        from circuits import targets
        from circuits.patching import check_direction
        from probekit import metrics
        from probekit.errors import ProbekitError, unknown
        from probekit.viz import write_html

        t = targets.get(target)
        check_direction(direction)
        if metric not in metrics.names():
            raise unknown("metric", metric, metrics.names())
        if n < 1:
            raise ProbekitError(f"--n must be at least 1, got {n}")
        tk = pk.tasks.get(task)
        mdl = pk.load(model, device=device)
        if tk.d_vocab > mdl.cfg.d_vocab:
            raise ProbekitError(f"task {task!r} has {tk.d_vocab} tokens but the model's vocabulary has {mdl.cfg.d_vocab}")
        res = run_patch(mdl, tk, target=t.name, direction=direction, metric=metric, n=n, seed=seed,
                        normalized=normalized, progress=not no_progress)
        out.mkdir(parents=True, exist_ok=True)
        d = res.to_dict()
        d.update({"model": str(model), "task": task, "n": n, "seed": seed, "normalized": normalized})
        (out / "patch.json").write_text(json.dumps(d))
        write_html(res.figure(), out / "patch.html", title=f"probekit patch: {task} {t.name}")
        typer.echo(f"patched {t.name} ({direction}, {metric}): clean {res.clean:.4f}, corrupt {res.corrupt:.4f} "
                   f"-> {out / 'patch.json'}, {out / 'patch.html'}")
