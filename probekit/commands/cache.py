"""``probekit cache``: cache a model's activations over a task or the user's data into an on-disk store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def parse_positions(value: str | None):
    """``--positions``: ``all`` (or unset) -> None, ``last``, or comma-separated ints such as ``0,5,-1``."""
    from probekit.errors import ProbekitError

    if value is None or value.strip() in ("", "all"):
        return None
    if value.strip() == "last":
        return "last"
    try:
        return [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        raise ProbekitError(f"cannot read --positions {value!r}: use all, last or integers such as 0,5,-1") from None


def register(app: typer.Typer) -> None:
    from probekit import tasks

    @app.command("cache")
    def cache_cmd(
        model: Path = typer.Option(..., "--model", help="run directory (probekit train) or local Hugging Face checkpoint"),
        out: Path = typer.Option(..., "--out", help="store directory to write (resumed if interrupted)"),
        task: Optional[str] = typer.Option(None, "--task", help=f"built-in task: {', '.join(tasks.names())}"),
        data: Optional[Path] = typer.Option(None, "--data", help="the user's labelled texts (.jsonl or .csv)"),
        hooks: str = typer.Option("resid_post", "--hooks",
                                  help="comma-separated hook kinds or names: resid_post (embed + every block), "
                                       "attn_out, mlp_out, z, L3, blocks.0.hook_resid_mid …"),
        n: Optional[int] = typer.Option(None, "--n", help="sequences to cache [task: 512; data: all]"),
        batch_size: int = typer.Option(64, "--batch-size", help="sequences per forward pass"),
        positions: Optional[str] = typer.Option(None, "--positions", help="all (default), last, or ints such as 0,-1"),
        memory_budget: str = typer.Option("256MB", "--memory-budget", help="bound on the activation buffers"),
        device: Optional[str] = typer.Option(None, "--device", help="torch device, e.g. cpu or cuda [cpu]"),
        seed: int = typer.Option(0, "--seed", help="data seed"),
        split: str = typer.Option("test", "--split", help="train or test data of the task"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="store activations as float32, float16 or bfloat16"),
        overwrite: bool = typer.Option(False, "--overwrite",
                                       help="discard any store at --out and cache from scratch (needed to replace "
                                            "a store made from another model or data)"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Cache activations of a model over a task or data file into a sharded on-disk store."""
        import torch

        import probekit as pk
        from probekit.activations.cache import parse_bytes
        from probekit.errors import ProbekitError

        if (task is None) == (data is None):
            raise ProbekitError("give exactly one of --task T or --data FILE.jsonl")
        if data is not None and not data.is_file():
            raise ProbekitError(f"data file not found: {data}")
        budget = parse_bytes(memory_budget)
        pos = parse_positions(positions)
        if device is not None:
            try:
                dev = torch.device(device)
            except RuntimeError:
                raise ProbekitError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ProbekitError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
        source = pk.tasks.get(task) if task is not None else None  # a bad task name fails before the model loads
        m = pk.load(model, device=device)
        if source is None:
            source = pk.load_data(data, m.tokenizer)
        if n is None and getattr(source, "n_examples", None) is None:
            n = 512
        store = pk.cache_activations(m, source, hooks, n=n, seed=seed, split=split, batch_size=batch_size,
                                     positions=pos, out=out, memory_budget=budget, overwrite=overwrite,
                                     dtype=dtype, progress=not no_progress)
        shards = len(store.manifest.get("shards", []))
        typer.echo(f"cached {len(store)} rows of {len(store.hooks)} hooks over {store.manifest['n']} sequences "
                   f"-> {out} ({shards} shard{'s' if shards != 1 else ''})")
