"""``probekit train``: train an in-house model on a built-in task into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from probekit.precision import PRECISIONS

#: ``--precision`` values: TrainConfig's, kebab-case on the command line.
_PRECISION_FLAGS = {p.replace("_", "-"): p for p in PRECISIONS}


def build_configs(task, *, layers=None, d_model=None, heads=None, d_mlp=None, attn_only=None, steps=None,
                  batch_size=None, lr=None, seed=None, checkpoint_every=None, precision=None):
    """The model and training configs: the task's defaults, overridden by the flags given (``None`` = not given)."""
    from probekit.model import ModelConfig
    from probekit.training import TrainConfig

    model_kw = {"d_vocab": task.d_vocab, "n_ctx": task.n_ctx, **task.default_model}
    model_kw["n_ctx"] = max(model_kw["n_ctx"], task.n_ctx)
    for key, value in (("n_layers", layers), ("d_model", d_model), ("n_heads", heads), ("d_mlp", d_mlp),
                       ("attn_only", attn_only), ("seed", seed)):
        if value is not None:
            model_kw[key] = value
    train_kw = dict(task.default_training)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr), ("seed", seed),
                       ("checkpoint_every", checkpoint_every), ("precision", precision)):
        if value is not None:
            train_kw[key] = value
    return ModelConfig(**model_kw), TrainConfig(**train_kw)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        task: str = typer.Option(..., "--task", help="built-in task to train on (see `probekit tasks`)"),
        out: Path = typer.Option(..., "--out", help="run directory to write (loadable by probekit.load)"),
        layers: Optional[int] = typer.Option(None, "--layers", help="number of blocks [task default]"),
        d_model: Optional[int] = typer.Option(None, "--d-model", help="residual width [task default]"),
        heads: Optional[int] = typer.Option(None, "--heads", help="attention heads per block [task default]"),
        d_mlp: Optional[int] = typer.Option(None, "--d-mlp", help="MLP width [4 * d_model]"),
        attn_only: Optional[bool] = typer.Option(None, "--attn-only/--with-mlp",
                                                 help="attention-only blocks [task default]"),
        steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps [task default]"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="sequences per step [task default]"),
        lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate [task default]"),
        seed: Optional[int] = typer.Option(None, "--seed", help="seed of the init and the data order [0]"),
        device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
        precision: Optional[str] = typer.Option(
            None, "--precision", metavar="|".join(_PRECISION_FLAGS),
            help="bf16 autocasts the forward pass on CUDA (elsewhere fp32, with a warning) [fp32]"),
        checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every",
                                                       help="checkpoint every N steps [500]"),
        resume: bool = typer.Option(False, "--resume", help="continue the interrupted run in --out exactly"),
        no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    ) -> None:
        """Train an in-house transformer on a task; writes config.json, model.safetensors, tokenizer, metrics."""
        from probekit import tasks
        from probekit.errors import ProbekitError, unknown

        if precision is not None and precision not in _PRECISION_FLAGS:
            raise unknown("precision", precision, _PRECISION_FLAGS)
        t = tasks.get(task)  # a bad name fails here, before torch is imported

        import torch

        from probekit.model import build_model
        from probekit.training import train

        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ProbekitError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ProbekitError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
        model_cfg, train_cfg = build_configs(
            t, layers=layers, d_model=d_model, heads=heads, d_mlp=d_mlp, attn_only=attn_only, steps=steps,
            batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every,
            precision=None if precision is None else _PRECISION_FLAGS[precision])
        model = build_model(model_cfg, tokenizer=t.tokenizer(), device=dev)
        result = train(model, t, train_cfg, out=out, resume=resume, device=dev, progress=not no_progress)
        typer.echo(f"trained {task}: {result.steps} steps, loss {result.final_loss:.4f}, "
                   f"eval loss {result.eval_loss:.4f} -> {out}")
