"""Run directories: what ``probekit train`` writes and ``probekit.load`` reads.

A run directory holds

- ``config.json``: the model config, the task (``task.to_dict()``), the
  training settings, the seed, the versions of torch / transformer-lens /
  probekit, and the weights' fingerprint;
- ``model.safetensors``: the weights (bridge ``state_dict`` names);
- a Hugging Face tokenizer (``tokenizer.json`` and its configs) over the
  task's vocabulary;
- ``metrics.jsonl``: one line per training step (``step``, ``loss``, ``lr``,
  ``eval_loss`` where measured);
- ``checkpoint.safetensors``: weights, optimizer state and step, written
  every N steps and at the end, for ``resume``.

Weights are read with safetensors only, never unpickled; every file is
written to a temporary name and renamed into place.

Example:
    >>> import probekit as pk
    >>> task = pk.tasks.get("parens")
    >>> cfg = pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab)
    >>> pk.save_run(pk.build_model(cfg), "/tmp/run", model_config=cfg, task=task)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from probekit.errors import ProbekitError
from probekit.model import ModelConfig, fingerprint
from probekit.tasks.base import Task
from probekit.tokenizer import save_tokenizer

RUN_FORMAT = "probekit-run"
RUN_FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
#: weights + optimizer state + step, while (and after) training.
CHECKPOINT = "checkpoint.safetensors"
_CKPT_FORMAT = "probekit-checkpoint/1"


@dataclass(frozen=True)
class RunInfo:
    """The parsed ``config.json`` of a run directory.

    Attributes:
        path: the run directory.
        model_config: the model's shape.
        task: the task's ``to_dict()`` (rebuild with ``probekit.tasks.from_dict``).
        train_config: the training settings as a dict, or ``None`` if never trained here.
        fingerprint: :func:`probekit.fingerprint` of the saved weights.
        versions: package versions the run was written with.
    """

    path: Path
    model_config: ModelConfig
    task: dict[str, Any]
    train_config: dict[str, Any] | None
    fingerprint: str
    versions: dict[str, str]


def versions() -> dict[str, str]:
    """Versions of the packages a run depends on."""
    import transformer_lens  # noqa: F401

    from probekit import __version__

    try:
        from importlib.metadata import version

        tl = version("transformer-lens")
    except Exception:  # pragma: no cover - not installed as a distribution
        tl = getattr(transformer_lens, "__version__", "unknown")
    return {"torch": torch.__version__, "transformer_lens": tl, "probekit": __version__,
            "python": platform.python_version()}


def model_config_of(model) -> ModelConfig:
    """The :class:`ModelConfig` of an in-house model (from its bridge config).

    Raises:
        ProbekitError: ``model`` is not an in-house (TransformerLens-native) model.
    """
    cfg = model.cfg
    if getattr(cfg, "architecture", None) != "TransformerLensNative":
        raise ProbekitError(
            f"only in-house models (built with probekit.build_model) make run directories, got architecture "
            f"{getattr(cfg, 'architecture', None)!r}"
        )
    norm = cfg.normalization_type or "none"
    return ModelConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
        d_head=None if cfg.d_head * cfg.n_heads == cfg.d_model else cfg.d_head,
        d_mlp=None if cfg.attn_only or cfg.d_mlp == 4 * cfg.d_model else cfg.d_mlp,
        attn_only=bool(cfg.attn_only), norm=norm, positional=cfg.positional_embedding_type,
        n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, act_fn=cfg.act_fn, seed=cfg.seed if cfg.seed is not None else 0,
    )


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model.state_dict()`` to a safetensors file (tmp + rename)."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "probekit": "weights"})
    os.replace(tmp, path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors``; a one-line error if it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ProbekitError(f"no weights file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProbekitError(f"corrupt weights file {path} (not a readable safetensors file: {first})") from None
    if meta.get("probekit") != "weights":
        raise ProbekitError(f"{path} was not written by probekit (foreign safetensors file)")
    return tensors


def save_run(
    model,
    out: str | Path,
    *,
    model_config: ModelConfig,
    task: Task,
    train_config: Any | None = None,
    tokenizer: Any | None = None,
) -> Path:
    """Write ``model`` as a run directory ``out`` (created if missing) and return its path.

    Args:
        model: an in-house ``TransformerBridge``.
        out: the run directory.
        model_config: the model's shape (``build_model`` rebuilds it from this).
        task: the task it was (or will be) trained on; its tokenizer is saved.
        train_config: the :class:`~probekit.training.TrainConfig`, if trained.
        tokenizer: the tokenizer to save; default ``model.tokenizer`` or ``task.tokenizer()``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or getattr(model, "tokenizer", None) or task.tokenizer()
    save_tokenizer(tokenizer, out)
    save_weights(model, out / WEIGHTS)
    tc = train_config.to_dict() if hasattr(train_config, "to_dict") else train_config
    config = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "model": model_config.to_dict(),
        "task": task.to_dict(),
        "training": tc,
        "seed": {"model": model_config.seed, "data": tc.get("seed") if tc else None},
        "fingerprint": fingerprint(model),
        "versions": versions(),
    }
    _atomic_write_text(out / CONFIG, json.dumps(config, indent=2) + "\n")
    model.probekit_source = {"kind": "run", "path": str(out.resolve()), "model_config": model_config.to_dict(),
                             "lm_head": True}
    return out


# ---- checkpoints: one safetensors file (tensors) with JSON metadata, written atomically ----


def write_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     meta: dict[str, Any]) -> None:
    """Write ``model``'s weights and ``optimizer``'s state to one safetensors file (tmp file, fsync, rename).

    ``meta`` (JSON-serialisable, e.g. the step) is stored in the file's header.
    """
    path = Path(path)
    tensors = {f"model/{k}": v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    slots: dict[str, list[str]] = {}
    for idx, per_param in state["state"].items():
        slots[str(idx)] = []
        for key, value in per_param.items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim/{idx}/{key}"] = value.detach().to("cpu").clone().contiguous()
            slots[str(idx)].append(key)
    header = {**meta, "format": _CKPT_FORMAT, "param_groups": state["param_groups"], "slots": slots}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"probekit": json.dumps(header)})
    with open(tmp, "rb") as f:  # the bytes are on disk before the rename makes them the checkpoint
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a checkpoint; a one-line error if it is corrupt or not a checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("probekit")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProbekitError(f"cannot read checkpoint {path}: {first}") from None
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        meta = {}
    if not isinstance(meta, dict) or meta.get("format") != _CKPT_FORMAT:
        raise ProbekitError(f"{path} is not a probekit checkpoint")
    return tensors, meta


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimizer state written by :func:`write_checkpoint`; returns its metadata."""
    tensors, meta = read_checkpoint(path)
    where = Path(path).parent
    if meta.get("param_names") not in (None, [n for n, _ in model.named_parameters()]):
        raise ProbekitError(f"cannot resume {where}: the model's parameters differ from the checkpoint's")
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(weights, strict=True)
        state = {int(idx): {key: tensors[f"optim/{idx}/{key}"] for key in keys}
                 for idx, keys in meta["slots"].items()}
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProbekitError(f"cannot resume {where}: the checkpoint does not fit the model ({first})") from None
    return meta


def truncate_metrics(path: str | Path, step: int) -> list[dict[str, float]]:
    """Keep the ``metrics.jsonl`` rows up to ``step`` and return them.

    A killed run may have logged past its last checkpoint, or died mid-line.
    """
    path = Path(path)
    rows: list[dict[str, float]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the kill
                break
            if row.get("step", step + 1) > step:
                break
            rows.append(row)
    _atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a probekit run (a ``config.json`` in probekit's format)."""
    cfg = Path(path) / CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == RUN_FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_run(path: str | Path) -> RunInfo:
    """Parse a run directory's ``config.json``."""
    path = Path(path)
    if not is_run_dir(path):
        raise ProbekitError(f"{path} is not a probekit run directory (no config.json in probekit's format)")
    d = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    if d.get("format_version") != RUN_FORMAT_VERSION:
        raise ProbekitError(f"{path}: run format version {d.get('format_version')!r}, expected {RUN_FORMAT_VERSION}")
    try:
        return RunInfo(path=path, model_config=ModelConfig.from_dict(d["model"]), task=d["task"],
                       train_config=d.get("training"), fingerprint=d["fingerprint"],
                       versions=d.get("versions", {}))
    except (KeyError, TypeError) as e:
        raise ProbekitError(f"{path}/{CONFIG} is incomplete: {e}") from None


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.jsonl`` (empty if it has none)."""
    f = Path(path) / METRICS
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


__all__ = ["CHECKPOINT", "RunInfo", "is_run_dir", "load_checkpoint", "model_config_of", "read_checkpoint", "read_metrics",
           "read_run", "read_weights", "save_run", "save_weights", "truncate_metrics", "versions", "write_checkpoint"]
