"""``probekit sweep``: probe a label on every layer, with controls; JSON + a standalone HTML plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from probekit.commands._help import lazy_help


def _kinds() -> str:
    from probes.trainer import KINDS  # imports torch: only for the command's own help page

    return " | ".join(KINDS)


def register(app: typer.Typer) -> None:
    @app.command("sweep", cls=lazy_help(kinds=_kinds))
    def sweep_cmd(
        label: str = typer.Option(..., "--label", help="label to probe (see `probekit tasks`)"),
        out: Path = typer.Option(..., "--out", help="directory for sweep.json + sweep.html"),
        acts: Optional[Path] = typer.Option(None, "--acts", help="activation store (probekit cache)"),
        model: Optional[Path] = typer.Option(None, "--model", help="run directory, to cache on the fly (with --task)"),
        task: Optional[str] = typer.Option(None, "--task", help="task to cache on the fly (with --model)"),
        n: int = typer.Option(256, "--n", help="sequences to cache with --model"),
        kind: Optional[str] = typer.Option(None, "--kind", help="probe kind: {kinds} [from the label]"),
        c: Optional[float] = typer.Option(None, "--C", help="inverse regularisation [cross-validated]"),
        control: bool = typer.Option(True, "--control/--no-control", help="control task and selectivity"),
        mdl: bool = typer.Option(True, "--mdl/--no-mdl", help="MDL online code length"),
        baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="untrained-model baseline"),
        erasure: bool = typer.Option(True, "--erasure/--no-erasure", help="LEACE erasure and amnesic check"),
        n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples for the intervals"),
        seed: int = typer.Option(0, "--seed", help="seed of the split, control task and bootstrap"),
        device: Optional[str] = typer.Option(None, "--device", help="torch device [cpu]"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Probe LABEL on every residual layer: accuracy, control, selectivity, MDL, CI → OUT/sweep.{json,html}."""
        import probes
        from probekit.errors import ProbekitError
        from probes.cli_support import open_store
        from probes.trainer import KINDS

        if kind is not None and kind not in KINDS:
            raise ProbekitError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
        store, m = open_store(acts, model, task, n=n, device=device, seed=seed)
        label_kind = store.label_kinds.get(label, "classification") if label in store.labels else None
        if label_kind is None:
            store.label(label)  # raises the did-you-mean error
        kind = kind or ("logistic" if label_kind == "classification" else "ridge")
        cfg = probes.ProbeConfig(kind=kind, C=c, device=device or "cpu")
        res = probes.sweep(store, label, config=cfg, control=control, mdl=mdl, baselines=baselines,
                           erasure=erasure, causal=erasure, model=m, n_boot=n_boot, seed=seed,
                           progress=not no_progress)
        out.mkdir(parents=True, exist_ok=True)
        res.to_json(out / "sweep.json")
        from probekit.viz import write_html

        write_html(res.figure(), out / "sweep.html", title=f"probe sweep: {label}")
        typer.echo(res.table())
        typer.echo(f"wrote {out / 'sweep.json'} and {out / 'sweep.html'}")
