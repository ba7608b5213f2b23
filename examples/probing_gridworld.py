# %% [markdown]
# # Where does a small transformer keep the agent's position?
# Train on random legal moves in a grid, cache the residual stream, and probe
# every layer for x and y — with control tasks, selectivity, MDL and erasure.

# %%
import probekit as pk
import probes

task = pk.tasks.get("gridworld")
model = pk.build_model(pk.ModelConfig(**task.default_model, d_vocab=task.d_vocab), tokenizer=task.tokenizer())
pk.train(model, task, pk.TrainConfig(**task.default_training), out="runs/gridworld")

# %% Cache every residual layer (in memory; pass out="acts/gridworld" for an on-disk store)
store = pk.cache_activations(model, task, hooks="resid_post", n=256)

# %% Probe sweep: accuracy, control accuracy and selectivity per layer
sweep = probes.sweep(store, label="x", model=model)
print(sweep.to_dict())
sweep.figure()
