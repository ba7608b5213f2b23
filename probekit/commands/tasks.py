"""``probekit tasks``: list the built-in tasks and their labels."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("tasks")
    def tasks_cmd() -> None:
        """List the built-in tasks, their probe labels and control-task keys."""
        from probekit import tasks

        for name in tasks.names():
            cls = tasks.task_class(name)
            try:
                task = cls()
            except Exception as e:  # a task that needs data it cannot find still lists
                typer.echo(f"{name:10s} {cls.description} (unavailable: {e})")
                continue
            typer.echo(f"{name:10s} {task.description}")
            typer.echo(f"{'':10s} control key: {task.control_key}")
            for spec in task.label_specs:
                typer.echo(f"{'':10s} label {spec.name} ({spec.kind}): {spec.description}")
