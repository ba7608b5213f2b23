"""``probekit probe``: train one linear probe on one layer and save it with its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from probekit.commands._help import lazy_help


def _kinds() -> str:
    from probes.trainer import KINDS  # imports torch: only for the command's own help page

    return " | ".join(KINDS)


def register(app: typer.Typer) -> None:
    @app.command("probe", cls=lazy_help(kinds=_kinds))
    def probe_cmd(
        label: str = typer.Option(..., "--label", help="label to probe (see `probekit tasks`)"),
        layer: str = typer.Option(..., "--layer", help="layer: embed, L3, an integer block, L1H2 or a hook name"),
        out: Path = typer.Option(..., "--out", help="directory for probe.json + probe.safetensors"),
        acts: Optional[Path] = typer.Option(None, "--acts", help="activation store (probekit cache)"),
        model: Optional[Path] = typer.Option(None, "--model", help="run directory, to cache on the fly (with --task)"),
        task: Optional[str] = typer.Option(None, "--task", help="task to cache on the fly (with --model)"),
        n: int = typer.Option(256, "--n", help="sequences to cache with --model"),
        hook: str = typer.Option("resid_post", "--hook", help="hook kind for an integer --layer"),
        kind: Optional[str] = typer.Option(None, "--kind", help="probe kind: {kinds} [from the label]"),
        c: Optional[float] = typer.Option(None, "--C", help="inverse regularisation [cross-validated]"),
        control: bool = typer.Option(False, "--control", help="also fit the control task and report selectivity"),
        seed: int = typer.Option(0, "--seed", help="seed of the split and the control task"),
        device: Optional[str] = typer.Option(None, "--device", help="torch device [cpu]"),
    ) -> None:
        """Train a probe on one layer; write OUT/probe.json (metrics) and OUT/probe.safetensors."""
        from probekit.errors import ProbekitError
        from probes.cli_support import open_store
        from probes.single import train_probe
        from probes.trainer import KINDS

        if kind is not None and kind not in KINDS:
            raise ProbekitError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
        store, _ = open_store(acts, model, task, n=n, device=device, seed=seed)
        probe, metrics = train_probe(store, layer, label, kind=kind, C=c, control=control, seed=seed,
                                     hook=hook, device=device or "cpu", out=out)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        typer.echo(f"probe {label} @ {metrics['layer']}: {shown} -> {out}")
