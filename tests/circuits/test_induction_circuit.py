"""Done-when of issue 5: noising head patching on a trained induction model finds the circuit."""

from __future__ import annotations

import pytest

import circuits
import probekit as pk
from probekit.heads import head_scores, repeated_tokens


@pytest.mark.slow
def test_noising_head_patching_finds_previous_token_and_induction_heads():
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(**{**task.default_model, "d_vocab": task.d_vocab, "seed": 0})
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    pk.train(model, task, pk.TrainConfig(steps=2000, batch_size=64, lr=1e-3, weight_decay=0.01, eval_every=None,
                                         checkpoint_every=None), progress=False)
    scores = head_scores(model, repeated_tokens(model, seq_len=20, n=16))
    prev = [(0, h) for h in range(cfg.n_heads) if scores.previous_token[0, h] > 0.4]
    ind = [(1, h) for h in range(cfg.n_heads) if scores.induction[1, h] > 0.4]
    assert prev and ind, f"no circuit formed: {scores.to_dict()}"

    p = task.patching_pairs(32, seed=1)
    metric = pk.metrics.make("logit-diff", answers=p.answers, wrong=p.wrong)
    res = circuits.patch(model, p.clean, p.corrupt, metric, target="heads", direction="noising", progress=False)
    effect = res.effect("clean").abs()  # how far each head's corrupt output moves the clean run
    circuit = prev + ind
    others = [(l, h) for l in range(2) for h in range(cfg.n_heads) if (l, h) not in circuit]
    smallest_in = min(float(effect[l, h]) for l, h in circuit)
    largest_out = max(float(effect[l, h]) for l, h in others)
    assert res.clean - res.corrupt > 1.0  # the task is solved on clean prompts
    assert smallest_in > 2 * largest_out, (effect, circuit)
