"""Logit lens and direct logit attribution, per layer and per head.

* Logit lens (nostalgebraist 2020): decode the residual stream after each
  layer with the model's own final norm and unembedding.
* Direct logit attribution (Elhage et al. 2021; Wang et al. 2022): each
  component's write into the final residual, divided by the final norm's
  scale (frozen at the real run, as TransformerLens' ``apply_ln_to_stack``
  does) and projected on the unembedding direction ``W_U[:, answer] −
  W_U[:, wrong]``. Heads are read from ``hook_z @ W_O`` (per-head results
  are not available on native bridges). The parts add up exactly to the
  model's logit difference.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from circuits._engine import check_tokens, eval_mode
from circuits.patching import finish
from circuits.result import PatchResult
from probekit import metrics
from probekit.errors import ProbekitError


def logit_lens(
    model,
    tokens: Int[Tensor, "batch pos"],
    answers: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"],
    *,
    pos: int = -1,
    n_boot: int = 1000,
) -> PatchResult:
    """Logit difference read from the residual stream after the embedding and after each block.

    Returns:
        A :class:`PatchResult` (``method="logit-lens"``) with axis ``("layer",)`` over
        ``embed, L0 … L{n-1}``, per-example values and bootstrap intervals; the last
        entry equals the model's own logit difference.
    """
    with eval_mode(model), torch.no_grad():
        tokens, _ = check_tokens(model, tokens, tokens)
        n = model.cfg.n_layers
        names = ["blocks.0.hook_resid_pre"] + [f"blocks.{L}.hook_resid_post" for L in range(n)]
        logits, cache = model.run_with_cache(tokens, names_filter=lambda x: x in set(names))
        per = []
        for name in names:
            lg = model.unembed(model.ln_final(cache[name]))
            per.append(metrics.logit_diff(lg, answers, wrong, pos=pos, reduce="none"))
        store = torch.stack(per).float().cpu()
        final = metrics.logit_diff(logits, answers, wrong, pos=pos, reduce="none").float().cpu()
    values, pe, lo, hi = finish(store, True, n_boot)
    return PatchResult(values=values, axes=("layer",), labels={"layer": ["embed"] + [f"L{L}" for L in range(n)]},
                       target="resid-post", direction="none", metric="logit-diff", clean=float(final.mean()),
                       corrupt=0.0, per_example=pe, ci_low=lo, ci_high=hi, method="logit-lens")


def dla(
    model,
    tokens: Int[Tensor, "batch pos"],
    answers: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"],
    *,
    pos: int = -1,
    n_boot: int = 1000,
) -> PatchResult:
    """Direct logit attribution of every head (``[layer, head]``), with MLPs, embeddings and biases in ``extra``.

    Returns:
        A :class:`PatchResult` (``method="dla"``): ``values[l, h]`` is head ``(l, h)``'s direct
        contribution to the logit difference (batch mean), with per-example values and intervals;
        ``extra`` holds ``mlp`` (per layer), ``attn_bias`` (per layer), ``embed``, ``pos_embed``,
        ``unembed_bias`` and ``total`` (which equals the model's logit difference).
    """
    cfg = model.cfg
    if cfg.normalization_type not in (None, "LN", "LNPre", "RMS", "RMSPre"):
        raise ProbekitError(f"direct logit attribution is unsupported for final norm {cfg.normalization_type!r}")
    with eval_mode(model), torch.no_grad():
        tokens, _ = check_tokens(model, tokens, tokens)
        n, H = cfg.n_layers, cfg.n_heads
        logits, cache = model.run_with_cache(tokens)
        B = tokens.shape[0]
        a = metrics._check_tokens("answers", answers, logits)
        w = metrics._check_tokens("wrong", wrong, logits)
        direction = (model.W_U[:, a] - model.W_U[:, w]).T  # [batch, d_model]
        centered = cfg.normalization_type in ("LN", "LNPre")
        if cfg.normalization_type is None:
            scale = torch.ones(B, 1, device=logits.device)
            gamma = torch.ones(cfg.d_model, device=logits.device)
            beta_term = torch.zeros(B, device=logits.device)
        else:
            scale = cache["ln_final.hook_scale"][:, pos]  # [batch, 1]
            params = dict(model.ln_final.named_parameters())
            gamma = next((v for k, v in params.items() if k.endswith("weight")), torch.ones(cfg.d_model))
            beta = next((v for k, v in params.items() if k.endswith("bias")), None)
            beta_term = (direction @ beta) if beta is not None else torch.zeros(B, device=logits.device)
        udir = direction * gamma  # [batch, d_model]

        def project(x: Tensor) -> Tensor:  # x: [batch, ..., d_model] at the read position
            if centered:
                x = x - x.mean(-1, keepdim=True)
            shape = (B,) + (1,) * (x.ndim - 2)
            return (x * udir.view(B, *([1] * (x.ndim - 2)), -1)).sum(-1) / scale.view(shape)

        heads, mlp, attn_bias = [], [], []
        for L in range(n):
            z = cache[f"blocks.{L}.attn.hook_z"][:, pos]  # [batch, head, d_head]
            writes = torch.einsum("bhe,hed->bhd", z, model.blocks[L].attn.W_O)
            heads.append(project(writes))
            attn_bias.append(project(model.blocks[L].attn.b_O.expand(B, -1)))
            if f"blocks.{L}.hook_mlp_out" in cache.cache_dict:
                mlp.append(project(cache[f"blocks.{L}.hook_mlp_out"][:, pos]))
        embed = project(cache["hook_embed"][:, pos])
        pos_embed = project(cache["hook_pos_embed"][:, pos]) if "hook_pos_embed" in cache.cache_dict else torch.zeros(B)
        b_U = model.b_U[a] - model.b_U[w] if getattr(model, "b_U", None) is not None else torch.zeros(B)
        store = torch.stack(heads).permute(0, 2, 1).float().cpu()  # [layer, head, batch]
        parts = {
            "mlp": torch.stack(mlp).float().cpu() if mlp else torch.zeros(0, B),
            "attn_bias": torch.stack(attn_bias).float().cpu(),
            "embed": embed.float().cpu(),
            "pos_embed": pos_embed.float().cpu(),
            "unembed_bias": (b_U + beta_term).float().cpu(),
        }
        total = store.sum((0, 1)) + parts["mlp"].sum(0) + parts["attn_bias"].sum(0) + parts["embed"] \
            + parts["pos_embed"] + parts["unembed_bias"]
        final = metrics.logit_diff(logits, answers, wrong, pos=pos, reduce="none").float().cpu()
    values, pe, lo, hi = finish(store, True, n_boot)
    extra = {k: v.mean(-1) for k, v in parts.items()}
    extra["total"] = float(total.mean())
    extra["total_per_example"] = total
    return PatchResult(values=values, axes=("layer", "head"),
                       labels={"layer": [f"L{L}" for L in range(n)], "head": [f"H{h}" for h in range(H)]},
                       target="heads", direction="none", metric="logit-diff", clean=float(final.mean()), corrupt=0.0,
                       per_example=pe, ci_low=lo, ci_high=hi, method="dla", extra=extra)
