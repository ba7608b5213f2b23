"""The training loop: next-token prediction on a task, resumable bit for bit.

AdamW (Loshchilov & Hutter 2019) with a linear warm-up and cosine decay
(Loshchilov & Hutter 2017), gradient clipping and weight decay on the weight
matrices only (as in nanoGPT). The batch of step ``s`` is
``task.batch(batch_size, seed=step_seed(config.seed, s), split="train")``, a
pure function of the step, and the learning rate is a pure function of the
step too, so a checkpoint (weights, optimizer state, step) is all the state
there is: ``resume=True`` continues an interrupted run to the same final
weights, bit for bit on CPU, as an uninterrupted one.

Example:
    >>> import probekit as pk
    >>> task = pk.tasks.get("induction")
    >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab))
    >>> result = pk.train(model, task, pk.TrainConfig(steps=5, batch_size=4), progress=False)
    >>> result.steps
    5
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from probekit import runs
from probekit.errors import ProbekitError
from probekit.precision import PRECISIONS, Precision  # re-exported; torch-free, for the CLI's --precision choices
from probekit.runs import CHECKPOINT, METRICS, read_checkpoint
from probekit.tasks.base import Task

log = logging.getLogger(__name__)


#: fields that may differ between an interrupted run and its resumption (they do not change the weights).
_RESUME_FREE = ("checkpoint_every", "eval_every", "eval_batches")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of one training run.

    Args:
        steps: optimizer steps in all.
        batch_size: sequences per step.
        lr: peak learning rate (reached at the end of the warm-up).
        weight_decay: AdamW decoupled weight decay, applied to weight matrices
            (parameters with 2+ dimensions), not to biases, norms.
        betas: AdamW moment coefficients.
        warmup_steps: linear warm-up from 0 to ``lr``.
        min_lr: the cosine decay ends at ``min_lr * lr`` (a ratio).
        grad_clip: maximal global gradient norm; ``None`` disables clipping.
        eval_every: measure the held-out (``split="test"``) loss every so many
            steps and at the last step; ``None`` only at the last step.
        eval_batches: held-out batches (of ``batch_size``) per evaluation.
        checkpoint_every: write a checkpoint every so many steps (and at the
            end) when training into a run directory; ``None`` only at the end.
        seed: seed of the data order (the model's init seed is its own).
        precision: ``"bf16"`` runs the forward pass under bf16 autocast on
            CUDA; elsewhere it falls back to fp32 with a warning.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int | None = 100
    eval_batches: int = 4
    checkpoint_every: int | None = 500
    seed: int = 0
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # from JSON
            object.__setattr__(self, "betas", tuple(self.betas))
        for name in ("steps", "batch_size", "eval_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ProbekitError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("eval_every", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ProbekitError(f"{name} must be a positive integer or None, got {v!r}")
        if not self.lr > 0:
            raise ProbekitError(f"lr must be positive, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ProbekitError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.warmup_steps < 0:
            raise ProbekitError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not 0 <= self.min_lr <= 1:
            raise ProbekitError(f"min_lr is a ratio of lr in [0, 1], got {self.min_lr!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ProbekitError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ProbekitError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.precision not in PRECISIONS:
            raise ProbekitError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ProbekitError(f"unknown training config keys {sorted(extra)} (valid: {', '.join(sorted(known))})")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainResult:
    """What a training run returns.

    Attributes:
        final_loss: training loss of the last step.
        eval_loss: held-out loss measured at the last step.
        steps: optimizer steps taken in all (including those before a resume).
        history: one dict per step (``step``, ``loss``, ``lr``, and ``eval_loss``
            where measured), as in ``metrics.jsonl``.
        out: the run directory, if any.
    """

    final_loss: float
    eval_loss: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    out: Path | None = None

    @property
    def eval_history(self) -> list[tuple[int, float]]:
        """``(step, eval_loss)`` at every evaluation."""
        return [(int(h["step"]), h["eval_loss"]) for h in self.history if "eval_loss" in h]


def step_seed(seed: int, step: int | str) -> int:
    """The data seed of training step ``step`` (or of an evaluation batch, ``"eval3"``)."""
    digest = hashlib.sha256(f"probekit:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of 0-based step ``step``: linear warm-up, then cosine decay to ``min_lr * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    floor = config.min_lr * config.lr
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    target_mask: Bool[Tensor, "batch pos"],
) -> Tensor:
    """Mean cross-entropy of predicting ``tokens[:, t+1]`` at position ``t``.

    A position counts when ``target_mask[:, t]`` holds and both ``t`` and
    ``t + 1`` are real (``mask``) tokens.
    """
    keep = target_mask[:, :-1] & mask[:, :-1] & mask[:, 1:]
    if not keep.any():
        raise ProbekitError("a training batch has no position whose next token counts in the loss")
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return nll[keep].mean()


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _forward_loss(model, task: Task, tokens, mask, device, autocast: bool) -> Tensor:
    tokens, mask = tokens.to(device), mask.to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(tokens)
    return next_token_loss(logits, tokens, mask, task.target_mask(tokens).to(device))


@torch.no_grad()
def evaluate(model, task: Task, config: TrainConfig, *, device: str | torch.device | None = None) -> float:
    """Mean next-token loss over ``config.eval_batches`` held-out batches (the same batches every call)."""
    device = _device_of(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    autocast = config.precision == "bf16" and device.type == "cuda"
    total = 0.0
    for i in range(config.eval_batches):
        b = task.batch(config.batch_size, seed=step_seed(config.seed, f"eval{i}"), split="test")
        total += float(_forward_loss(model, task, b.tokens, b.mask, device, autocast))
    model.train(was_training)
    return total / config.eval_batches


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def train(
    model,
    task: Task,
    config: TrainConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    callback: Callable[[int, Any], dict[str, float] | None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task``'s next-token prediction; leave it in eval mode.

    Args:
        model: a ``TransformerBridge`` (e.g. from :func:`probekit.build_model`).
        task: where the sequences come from; ``task.target_mask`` picks the
            positions whose next token counts in the loss.
        config: training settings (default :class:`TrainConfig()`).
        out: a run directory: ``metrics.jsonl`` and checkpoints are written
            there as training goes, and the finished run (``config.json``,
            ``model.safetensors``, tokenizer) at the end, loadable by
            :func:`probekit.load`. ``None`` keeps everything in memory.
        resume: continue from the checkpoint in ``out`` (exactly: the same
            final weights as an uninterrupted run); without a checkpoint,
            start from step 0. Without ``resume`` an existing run in ``out`` is
            overwritten.
        device: where to train; default where the model is.
        progress: show a tqdm progress bar.
        callback: ``callback(step, model)`` at every evaluation (model in eval
            mode, no gradients kept); the numbers it returns join that step's
            row of ``history`` and ``metrics.jsonl`` (head scores, accuracies…).

    Returns:
        A :class:`TrainResult`.
    """
    config = config or TrainConfig()
    if resume and out is None:
        raise ProbekitError("resume=True needs the run directory `out` to resume from")
    device = _device_of(model) if device is None else torch.device(device)
    if _device_of(model) != device:
        model.to(device)
    autocast = config.precision == "bf16" and device.type == "cuda"
    if config.precision == "bf16" and not autocast:
        log.warning("precision='bf16' uses autocast on CUDA only; training in fp32 on %s", device)

    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)
    run_dir = Path(out) if out is not None else None
    start, history = 0, []
    if run_dir is not None:
        model_config = runs.model_config_of(model)  # fail now, not after training, if it cannot be saved
        start, history = _open_run(run_dir, resume, model, optimizer, config)

    metrics_file = open(run_dir / METRICS, "a", encoding="utf-8") if run_dir is not None else None
    model.train()
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=f"train {task.name}", unit="step")
    try:
        for step in range(start, config.steps):
            row = _step(model, task, optimizer, config, step, device, autocast)
            done = step + 1
            if done == config.steps or (config.eval_every is not None and done % config.eval_every == 0):
                row["eval_loss"] = evaluate(model, task, config, device=device)
                if callback is not None:
                    model.eval()
                    row.update(callback(done, model) or {})
                    model.train()
            history.append(row)
            if metrics_file is not None:
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                if done == config.steps or (config.checkpoint_every is not None and done % config.checkpoint_every == 0):
                    _save_checkpoint(run_dir / CHECKPOINT, model, optimizer, done, config)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        model.eval()

    if run_dir is not None:
        runs.save_run(model, run_dir, model_config=model_config, task=task, train_config=config)
    return TrainResult(final_loss=history[-1]["loss"], eval_loss=history[-1]["eval_loss"], steps=config.steps,
                       history=history, out=run_dir)


def _step(model, task: Task, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int,
          device: torch.device, autocast: bool) -> dict[str, float]:
    """One optimizer step (0-based ``step``); returns its metrics row."""
    lr = lr_at(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batch = task.batch(config.batch_size, seed=step_seed(config.seed, step), split="train")
    loss = _forward_loss(model, task, batch.tokens, batch.mask, device, autocast)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return {"step": step + 1, "loss": loss.item(), "lr": lr}


def _open_run(run_dir: Path, resume: bool, model, optimizer: torch.optim.Optimizer,
              config: TrainConfig) -> tuple[int, list[dict[str, float]]]:
    """Prepare ``run_dir``: restore its checkpoint (``resume``) or clear it; returns (start step, history)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and (run_dir / CHECKPOINT).exists():
        start = _restore(run_dir / CHECKPOINT, model, optimizer, config)
        log.info("resuming %s from step %d", run_dir, start)
        return start, runs.truncate_metrics(run_dir / METRICS, start)
    if resume:
        log.warning("no checkpoint in %s to resume from; training from step 0", run_dir)
    elif any((run_dir / f).exists() for f in (CHECKPOINT, METRICS, runs.CONFIG)):
        log.warning("overwriting the run in %s (pass resume=True to continue it)", run_dir)
    # config.json goes first: until the run finishes, the directory is not a loadable run
    for name in (runs.CONFIG, runs.WEIGHTS, CHECKPOINT, METRICS):
        (run_dir / name).unlink(missing_ok=True)
    return 0, []


def _save_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> None:
    meta = {"step": step, "train_config": config.to_dict(), "param_names": [n for n, _ in model.named_parameters()]}
    runs.write_checkpoint(path, model, optimizer, meta)


def _restore(path: Path, model, optimizer: torch.optim.Optimizer, config: TrainConfig) -> int:
    """Restore weights and optimizer state from checkpoint ``path``; returns the step it was written at."""
    saved = TrainConfig.from_dict(runs.read_checkpoint(path)[1]["train_config"])
    diff = [f.name for f in dataclasses.fields(TrainConfig)
            if f.name not in _RESUME_FREE and getattr(saved, f.name) != getattr(config, f.name)]
    if diff:
        shown = ", ".join(f"{n}: {getattr(saved, n)!r} -> {getattr(config, n)!r}" for n in diff)
        raise ProbekitError(f"cannot resume {path.parent}: training settings differ from the checkpoint's ({shown})")
    meta = runs.load_checkpoint(path, model, optimizer)
    return int(meta["step"])


__all__ = ["CHECKPOINT", "PRECISIONS", "TrainConfig", "TrainResult", "evaluate", "lr_at", "next_token_loss", "read_checkpoint", "step_seed", "train"]
