"""``probekit demo``: the main job on the built-in default."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("report"), "--out", help="report directory (index.html)"),
        quick: bool = typer.Option(False, "--quick", help="smoke-test size: every part runs in seconds"),
        steps: int = typer.Option(None, "--steps", help="training steps [task recipe]"),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
        seed: int = typer.Option(0, "--seed", help="seed of model, data and probes"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
    ) -> None:
        """Train a 2-layer attention-only model on induction, then probe, visualize and patch it → OUT/index.html."""
        from probekit.experiments.demo import run

        index = run(out, quick=quick, steps=steps, device=device, seed=seed, progress=not no_progress)
        typer.echo(f"wrote {index}")
