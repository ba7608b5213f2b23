# %% [markdown]
# # Induction heads in a 2-layer attention-only transformer
# Train on random tokens with a repeated segment, find the previous-token and
# induction heads, and confirm them with activation patching.
# Run as a script (`python examples/induction_heads.py`) or open as a notebook.

# %%
import circuits
import probekit as pk

task = pk.tasks.get("induction")
model = pk.build_model(pk.ModelConfig(**task.default_model, d_vocab=task.d_vocab), tokenizer=task.tokenizer())
result = pk.train(model, task, pk.TrainConfig(**task.default_training), out="runs/induction")
print(f"held-out loss {result.eval_loss:.3f}")

# %% Head scores (TransformerLens' head-detector definitions)
tokens = pk.heads.repeated_tokens(model, seq_len=20, n=16)
scores = pk.heads.head_scores(model, tokens)
print("previous-token:", scores.top("previous_token", 2))
print("induction:     ", scores.top("induction", 2))
pk.viz.head_scores(model, tokens[:1], scores=scores)

# %% Attention patterns of every head
pk.viz.attention(model, tokens[:2])

# %% Noising patching of each head: which heads does the behaviour run through?
pairs = task.patching_pairs(32, seed=0)
metric = lambda logits: pk.metrics.logit_diff(logits, pairs.answers, pairs.wrong)  # noqa: E731
res = circuits.patch(model, pairs.clean, pairs.corrupt, metric, target="heads", direction="noising")
print(res.values)
res.figure()
