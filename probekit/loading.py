"""``probekit.load``: a probekit run directory or a local Hugging Face checkpoint → ``TransformerBridge``.

Run directories are rebuilt with :func:`probekit.build_model` (their
tokenizer attached) and their weights restored bit for bit from safetensors.
A local Hugging Face directory is booted with
``TransformerBridge.boot_transformers`` strictly offline, with the
directory's own tokenizer. Every model returned carries
``model.probekit_source``: ``{"kind": "run" | "hf", "path": <absolute path>,
"lm_head": bool, ...}``, which activation stores record so probes can rebuild
an untrained copy (:func:`untrained_copy`).

Example:
    >>> import probekit as pk
    >>> model = pk.load("runs/ind")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from probekit.errors import ProbekitError
from probekit.model import build_model, fingerprint

log = logging.getLogger(__name__)

#: files of which at least one makes a directory's tokenizer loadable by ``AutoTokenizer``.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def load(path: str | Path, *, device: str | torch.device | None = None):
    """Load a model: a probekit run directory or a local Hugging Face checkpoint directory.

    Args:
        path: the directory.
        device: where the weights go (default CPU).

    Returns:
        A ``TransformerBridge`` in eval mode with its tokenizer attached and
        ``probekit_source`` set.

    Raises:
        ProbekitError: the path is missing, not a model directory, has no
            tokenizer files, or holds corrupt or foreign weights.
    """
    from probekit.runs import is_run_dir

    path = Path(path)
    if not path.exists():
        raise ProbekitError(f"no such model directory: {path}")
    if not path.is_dir():
        raise ProbekitError(f"{path} is not a directory (expected a probekit run or a Hugging Face checkpoint)")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if is_run_dir(path):
        return _load_run(path, device)
    if _is_hf_dir(path):
        return _load_hf(path, device)
    raise ProbekitError(
        f"{path} is neither a probekit run directory nor a Hugging Face checkpoint (no usable config.json)"
    )


def _load_run(path: Path, device: torch.device):
    from probekit.runs import WEIGHTS, read_run, read_weights
    from probekit.tokenizer import load_tokenizer

    info = read_run(path)
    weights = read_weights(path / WEIGHTS)
    tokenizer = load_tokenizer(path)
    model = build_model(info.model_config, tokenizer=tokenizer, device="cpu")
    expected = set(model.state_dict())
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ProbekitError(f"{path / WEIGHTS} does not fit the model in config.json "
                            f"(missing {missing[:3]}, unexpected {extra[:3]})")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ProbekitError(f"{path / WEIGHTS} does not fit the model in config.json: "
                            f"{str(e).splitlines()[-1].strip()}") from None
    if fingerprint(model) != info.fingerprint:
        raise ProbekitError(f"{path / WEIGHTS} is corrupt: its fingerprint does not match config.json's")
    if device.type != "cpu":
        model.to(device)
    model.eval()
    model.probekit_source = {"kind": "run", "path": str(path.resolve()),
                             "model_config": info.model_config.to_dict(), "task": info.task, "lm_head": True}
    return model


# ---- local Hugging Face checkpoints ----


def _is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        d = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(d, dict) and "model_type" in d


def _offline() -> None:
    # No hub access exists (or is wanted): never try it.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):  # pragma: no cover
        pass


def _hf_tokenizer(path: Path):
    present = [f for f in TOKENIZER_FILES if (path / f).is_file()]
    if not present:
        raise ProbekitError(
            f"{path} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer with the model (tokenizer.save_pretrained(dir))"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProbekitError(f"cannot load the tokenizer in {path}: {first}") from None


@contextlib.contextmanager
def _quiet_transformers():
    """No ``transformers`` progress bar on stderr while loading (library code does not print)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _has_lm_head(path: Path, hf_config: dict[str, Any]) -> bool:
    """Whether the checkpoint carries trained language-model-head weights (an encoder like MiniLM does not)."""
    archs = hf_config.get("architectures") or []
    if any(a.endswith(("LMHeadModel", "ForCausalLM", "ForMaskedLM", "ForPreTraining")) for a in archs):
        return True
    if hf_config.get("tie_word_embeddings", True) and not hf_config.get("is_encoder_decoder", False) \
            and hf_config.get("model_type") in ("gpt2", "gpt_neo", "gptj", "opt", "llama", "mistral"):
        return True  # a causal LM whose head is tied to its embedding
    return False


def _load_hf(path: Path, device: torch.device):
    from transformer_lens.model_bridge import TransformerBridge

    _offline()
    hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    tokenizer = _hf_tokenizer(path)
    try:
        with _quiet_transformers():
            model = TransformerBridge.boot_transformers(str(path.resolve()), device=str(device), tokenizer=tokenizer)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProbekitError(f"cannot load the Hugging Face checkpoint in {path}: {first}") from None
    model.eval()
    lm_head = _has_lm_head(path, hf_config)
    if not lm_head:
        log.warning("%s has no language-model head (architectures %s): its logits are meaningless; "
                    "use its hidden states", path, hf_config.get("architectures"))
    model.probekit_source = {"kind": "hf", "path": str(path.resolve()), "lm_head": lm_head,
                             "model_type": hf_config.get("model_type"),
                             "architectures": hf_config.get("architectures")}
    return model


# ---- untrained copies (probe baselines) ----


def untrained_copy(model, *, seed: int | None = None):
    """The same architecture with a fresh random initialisation, in eval mode, with the same tokenizer.

    Probes compare against it (a probe that reads as well from random
    weights found the input, not the model's computation).

    Args:
        model: an in-house model or one loaded from a Hugging Face directory.
        seed: init seed (default: the model config's seed + 1, so it differs
            from the trained model's own initialisation).
    """
    source = getattr(model, "probekit_source", None) or {}
    device = next(model.parameters()).device
    if source.get("kind") == "hf":
        return _untrained_hf(model, source, device, seed)
    from probekit.model import ModelConfig
    from probekit.runs import model_config_of

    if "model_config" in source:
        cfg = ModelConfig.from_dict(source["model_config"])
    else:
        cfg = model_config_of(model)
    import dataclasses

    cfg = dataclasses.replace(cfg, seed=cfg.seed + 1 if seed is None else seed)
    copy = build_model(cfg, tokenizer=getattr(model, "tokenizer", None), device=device)
    copy.probekit_source = {**source, "kind": source.get("kind", "native"), "untrained": True,
                            "model_config": cfg.to_dict()}
    return copy


def _untrained_hf(model, source: dict[str, Any], device: torch.device, seed: int | None):
    from transformer_lens.model_bridge import TransformerBridge

    _offline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        with _quiet_transformers():
            copy = TransformerBridge.boot_transformers(source["path"], tokenizer=model.tokenizer, load_weights=False)
    if device.type != "cpu":
        copy.to(device)
    copy.eval()
    copy.probekit_source = {**source, "untrained": True}
    return copy


__all__ = ["TOKENIZER_FILES", "load", "untrained_copy"]
