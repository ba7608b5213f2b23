"""The hookable model: a TransformerLens 4.x ``TransformerBridge``.

In-house models are built from a :class:`ModelConfig` with
``TransformerBridge.boot_native``; every other part of probekit talks to the
bridge through its hook names, ``run_with_cache`` and ``run_with_hooks``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from probekit.errors import ProbekitError

Norm = Literal["LN", "RMS", "none"]
Positional = Literal["standard", "rotary"]
ActFn = Literal["gelu", "gelu_new", "relu", "silu"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of an in-house transformer.

    Args:
        n_layers: number of blocks.
        d_model: residual-stream width.
        n_heads: attention heads per block.
        d_head: width of one head; ``None`` means ``d_model // n_heads``.
        d_mlp: MLP hidden width; ``None`` means ``4 * d_model`` (ignored when
            ``attn_only``).
        attn_only: blocks have attention and no MLP.
        norm: ``"LN"`` (LayerNorm), ``"RMS"`` or ``"none"``.
        positional: learned absolute (``"standard"``) or ``"rotary"``.
        n_ctx: longest sequence.
        d_vocab: vocabulary size.
        act_fn: MLP nonlinearity.
        seed: seed of the weight initialisation.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = None
    attn_only: bool = False
    norm: Norm = "LN"
    positional: Positional = "standard"
    n_ctx: int = 64
    d_vocab: int = 64
    act_fn: ActFn = "gelu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab"):
            if getattr(self, name) < 1:
                raise ProbekitError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.d_head is None and self.d_model % self.n_heads:
            raise ProbekitError(
                f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads}); set d_head"
            )
        if self.norm not in ("LN", "RMS", "none"):
            raise ProbekitError(f"norm must be 'LN', 'RMS' or 'none', got {self.norm!r}")
        if self.positional not in ("standard", "rotary"):
            raise ProbekitError(f"positional must be 'standard' or 'rotary', got {self.positional!r}")

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ProbekitError(f"unknown model config keys {sorted(extra)}")
        return cls(**d)

    def bridge_config(self, device: str | torch.device = "cpu") -> TransformerBridgeConfig:
        """The TransformerLens config this describes."""
        return TransformerBridgeConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.head_dim,
            d_mlp=None if self.attn_only else (self.d_mlp or 4 * self.d_model),
            attn_only=self.attn_only,
            normalization_type=None if self.norm == "none" else self.norm,
            positional_embedding_type=self.positional,
            n_ctx=self.n_ctx,
            d_vocab=self.d_vocab,
            act_fn=self.act_fn,
            seed=self.seed,
            device=str(device),
            default_prepend_bos=False,
            tokenizer_prepends_bos=False,
        )


def build_model(
    config: ModelConfig,
    tokenizer: Any | None = None,
    device: str | torch.device = "cpu",
) -> TransformerBridge:
    """A freshly initialised in-house model, in eval mode.

    Args:
        config: the model's shape.
        tokenizer: a Hugging Face tokenizer to attach (so ``to_str_tokens`` works).
        device: where the weights live.

    Example:
        >>> model = build_model(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=10))
        >>> model(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 10])
    """
    if tokenizer is not None and len(tokenizer) > config.d_vocab:
        raise ProbekitError(
            f"tokenizer has {len(tokenizer)} tokens but d_vocab is {config.d_vocab}"
        )
    model = TransformerBridge.boot_native(config.bridge_config(device), tokenizer=tokenizer, device=device)
    model.eval()
    return model


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (names, shapes and values).

    Saved with activations and probes, so that they can refuse to be used with
    another model.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(json.dumps([list(t.shape), str(t.dtype)]).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
