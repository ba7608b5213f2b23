"""``probekit experiment NAME``: reproduce a classic finding in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    from probekit import experiments

    choices = [n for n in experiments.names() if n != "demo"]

    @app.command("experiment")
    def experiment_cmd(
        name: str = typer.Argument(..., help=f"one of: {', '.join(choices)}"),
        out: Path = typer.Option(..., "--out", help="report directory (index.html)"),
        quick: bool = typer.Option(False, "--quick", help="smoke-test size"),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
        seed: int = typer.Option(0, "--seed"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
    ) -> None:
        """Run a built-in experiment (induction, scaling, grokking, probing) and write its report."""
        run = experiments.get(name)
        index = run(out, quick=quick, device=device, seed=seed, progress=not no_progress)
        typer.echo(f"wrote {index}")
