"""The activation store: on-disk round trip, access, and refusal of corrupt, foreign or partial stores."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformer_lens.utilities.components_utils import get_act_name

import probekit as pk
from probekit.activations import ActivationStore, disk
from probekit.errors import ProbekitError
from probekit.hooks import HOOK_KINDS, resolve, resolve_for

HOOKS = ["resid_post", "z"]


@pytest.fixture(scope="module")
def parens():
    return pk.tasks.get("parens")


@pytest.fixture(scope="module")
def stores(tiny_model, parens, tmp_path_factory):
    """The same cache in memory and on disk (several shards of at most 200 rows)."""
    mem = pk.cache_activations(tiny_model, parens, HOOKS, n=12, batch_size=4)
    out = tmp_path_factory.mktemp("store") / "acts"
    dsk = pk.cache_activations(tiny_model, parens, HOOKS, n=12, batch_size=4, out=out, shard_rows=200)
    return mem, dsk


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_round_trip_equals_in_memory(stores, tiny_model):
    mem, dsk = stores
    again = ActivationStore.open(dsk.path)
    assert again.on_disk and not mem.on_disk
    assert len(again) == len(mem) == 12 * 49
    assert again.hooks == mem.hooks
    for h in mem.hooks:
        assert torch.equal(again.acts[h], mem.acts[h]), h
    for col in ("example_id", "position", "token"):
        assert torch.equal(getattr(again, col), getattr(mem, col)), col
    for k in mem.labels:
        assert torch.equal(again.labels[k], mem.labels[k])
        assert torch.equal(again.label_mask[k], mem.label_mask[k])
    assert again.label_kinds == mem.label_kinds == {"depth": "classification", "top": "classification"}


def test_manifest_records_provenance(stores, tiny_model, parens):
    _, dsk = stores
    m = json.loads((dsk.path / disk.MANIFEST).read_text())
    for key in ("n_layers", "n_heads", "d_model", "task", "control_key", "hooks"):
        assert m[key] == dsk.manifest[key]
    assert (m["n_layers"], m["n_heads"], m["d_model"]) == (2, 4, 32)
    assert m["task"] == parens.to_dict() and m["control_key"] == "token_position"
    assert m["model"]["fingerprint"] == pk.fingerprint(tiny_model)
    assert m["complete"] and m["rows"] == len(dsk)
    assert m["shapes"]["blocks.0.attn.hook_z"] == [4, 8] and m["dtypes"]["blocks.0.hook_resid_pre"] == "float32"
    assert {"torch", "transformer-lens", "safetensors"} <= set(m["versions"])
    shards = m["shards"]
    assert len(shards) >= 3 and sum(s["rows"] for s in shards) == len(dsk)
    assert all(s["rows"] <= 200 for s in shards)
    # shards tile the examples without gaps or overlaps
    assert shards[0]["examples"][0] == 0 and shards[-1]["examples"][1] == 12
    assert all(a["examples"][1] == b["examples"][0] for a, b in zip(shards, shards[1:]))
    for s in shards:
        assert disk.sha256_file(dsk.path / s["file"]) == s["sha256"]
        with safe_open(str(dsk.path / s["file"]), framework="pt") as f:
            ex = f.get_tensor("example_id")
            assert ex.min() >= s["examples"][0] and ex.max() < s["examples"][1]


def test_layer_access_same_in_memory_and_on_disk(stores):
    mem, dsk = stores
    assert mem.layers() == dsk.layers() == ["embed", "L0", "L1"]
    assert torch.equal(dsk.layer("L1H2"), mem.acts["blocks.1.attn.hook_z"][:, 2])
    assert torch.equal(dsk.layer("embed"), mem.acts["blocks.0.hook_resid_pre"])
    assert torch.equal(dsk.stack(), mem.stack())
    assert dsk.stack().shape == (3, len(mem), 32)
    # a row range across a shard boundary reads only what it needs and equals the slice
    assert torch.equal(dsk.rows("L0", 150, 450), mem.layer("L0")[150:450])
    parts = list(dsk.iter_batches(["L0", "L1H2"], 97))
    assert [sl.start for sl, _ in parts] == list(range(0, len(mem), 97))
    assert torch.equal(torch.cat([b["L0"] for _, b in parts]), mem.layer("L0"))
    assert torch.equal(torch.cat([b["L1H2"] for _, b in parts]), mem.layer("L1H2"))
    values, defined = dsk.label("depth")
    assert torch.equal(values, mem.labels["depth"]) and not defined[dsk.position == 0].any()


def test_access_errors_name_valid_choices(stores):
    _, dsk = stores
    with pytest.raises(ProbekitError, match="did you mean 'depth'"):
        dsk.label("dpth")
    with pytest.raises(ProbekitError, match="out of range"):
        dsk.layer("L7")
    with pytest.raises(ProbekitError, match="batch_rows"):
        next(dsk.iter_batches(["L0"], 0))


# ---- the short form `--layer <int> --hook <kind>` (probekit.hooks.resolve, integer branch) ----

@pytest.mark.parametrize("kind", HOOK_KINDS)
def test_integer_layer_with_hook_kind_is_the_transformerlens_name(tiny_model, kind):
    n_layers, n_heads = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
    for layer in range(n_layers):
        expected = get_act_name(kind, layer)  # TransformerLens' own shorthand -> name
        assert expected in tiny_model.hook_dict
        for spec in (layer, str(layer), f" {layer} "):  # the CLI passes --layer as text
            ref = resolve(spec, n_layers, n_heads, hook=kind)
            assert (ref.name, ref.head) == (expected, None)
        assert resolve_for(tiny_model, layer, hook=kind).name == expected
    assert resolve(0, n_layers).name == get_act_name("resid_post", 0)  # the default kind


def test_integer_layer_reads_that_hook_from_the_store(stores):
    mem, dsk = stores
    assert torch.equal(dsk.layer(1, hook="z"), mem.acts["blocks.1.attn.hook_z"].flatten(1))
    assert torch.equal(dsk.layer("0"), mem.acts["blocks.0.hook_resid_post"])
    with pytest.raises(ProbekitError) as e:  # a kind the store does not hold: the error names what it holds
        dsk.layer(1, hook="attn_out")
    assert all(h in _one_line(e) for h in dsk.hooks)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ProbekitError), msg
    return msg


@pytest.mark.parametrize("layer", [2, 7, -1, "-1"])
def test_integer_layer_out_of_range_names_the_valid_range(tiny_model, layer):
    with pytest.raises(ProbekitError) as e:
        resolve(layer, tiny_model.cfg.n_layers, hook="z")
    assert f"{layer!s}" in _one_line(e) and "2 blocks (0–1)" in str(e.value)
    with pytest.raises(ProbekitError, match="out of range"):
        resolve_for(tiny_model, layer, hook="z")


@pytest.mark.parametrize("kind, near", [("atn_out", "attn_out"), ("resid-post", "resid_post"), ("Z", None)])
def test_misspelt_hook_kind_names_the_valid_kinds(kind, near):
    with pytest.raises(ProbekitError) as e:
        resolve(1, 2, hook=kind)
    msg = _one_line(e)
    assert f"unknown hook kind {kind!r}" in msg and all(k in msg for k in HOOK_KINDS)
    if near is not None:
        assert f"did you mean {near!r}" in msg


def test_integer_layer_with_a_kind_the_model_lacks(tiny_attn_only):
    assert "blocks.1.hook_mlp_out" not in tiny_attn_only.hook_dict  # attention-only: no MLP
    with pytest.raises(ProbekitError) as e:
        resolve_for(tiny_attn_only, 1, hook="mlp_out")
    msg = _one_line(e)
    assert "blocks.1.hook_mlp_out" in msg
    assert all(k in msg for k in HOOK_KINDS if get_act_name(k, 1) in tiny_attn_only.hook_dict)


def test_malformed_integer_layer_is_a_one_line_error():
    for spec in ("--1", "1.5", "-"):
        with pytest.raises(ProbekitError) as e:
            resolve(spec, 2)
        assert "cannot read layer" in _one_line(e)


def test_tampered_shard_refused(stores, tmp_path):
    root = _copy(stores[1].path, tmp_path / "acts")
    shard = root / disk.shard_name(1)
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # one bit of one activation value
    shard.write_bytes(bytes(data))
    with pytest.raises(ProbekitError, match=r"shard-00001\.safetensors .* corrupt") as e:
        ActivationStore.open(root)
    assert "\n" not in str(e.value)


def test_truncated_and_missing_shards_refused(stores, tmp_path):
    root = _copy(stores[1].path, tmp_path / "acts")
    shard = root / disk.shard_name(0)
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ProbekitError, match="shard-00000"):
        ActivationStore.open(root)
    shard.unlink()
    with pytest.raises(ProbekitError, match="shard-00000.safetensors .* missing"):
        ActivationStore.open(root)


def test_foreign_shard_refused_even_with_matching_checksum(stores, tmp_path):
    """A valid safetensors file that is not this store's shard is refused by its columns, not only its checksum."""
    root = _copy(stores[1].path, tmp_path / "acts")
    foreign = root / disk.shard_name(2)
    save_file({"weight": torch.zeros(3, 3)}, str(foreign))
    manifest = json.loads((root / disk.MANIFEST).read_text())
    manifest["shards"][2]["sha256"] = disk.sha256_file(foreign)
    (root / disk.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ProbekitError, match="shard-00002.safetensors .* does not match the manifest"):
        ActivationStore.open(root)


def test_pickle_shard_is_never_unpickled(stores, tmp_path):
    root = _copy(stores[1].path, tmp_path / "acts")
    shard = root / disk.shard_name(0)
    torch.save({"x": torch.zeros(2)}, shard)  # a pickle under the shard's name
    with pytest.raises(ProbekitError, match="shard-00000"):
        ActivationStore.open(root)
    manifest = json.loads((root / disk.MANIFEST).read_text())
    manifest["shards"][0]["sha256"] = disk.sha256_file(shard)
    (root / disk.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ProbekitError, match="shard-00000.safetensors .* unreadable"):
        ActivationStore.open(root)


def test_not_a_store_refused(tmp_path):
    with pytest.raises(ProbekitError, match="not a directory"):
        ActivationStore.open(tmp_path / "nope")
    with pytest.raises(ProbekitError, match="manifest.json is missing"):
        ActivationStore.open(tmp_path)
    (tmp_path / disk.MANIFEST).write_text("{not json")
    with pytest.raises(ProbekitError, match="not valid JSON"):
        ActivationStore.open(tmp_path)
    (tmp_path / disk.MANIFEST).write_text(json.dumps({"format": "probekit-run"}))
    with pytest.raises(ProbekitError, match="not a probekit activation store"):
        ActivationStore.open(tmp_path)


def test_partial_store_opens_only_when_asked(stores, tmp_path):
    root = _copy(stores[1].path, tmp_path / "acts")
    manifest = json.loads((root / disk.MANIFEST).read_text())
    manifest["complete"] = False
    manifest["shards"] = manifest["shards"][:2]
    (root / disk.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ProbekitError, match="incomplete .* resume"):
        ActivationStore.open(root)
    part = ActivationStore.open(root, allow_partial=True)
    rows = sum(s["rows"] for s in manifest["shards"])
    assert len(part) == rows
    assert torch.equal(part.layer("L1"), stores[0].layer("L1")[:rows])


def test_direct_construction_checks_rows():
    with pytest.raises(ProbekitError, match="'token' has 2 rows, expected 3"):
        ActivationStore(acts={"blocks.0.hook_resid_pre": torch.zeros(3, 4)}, example_id=torch.zeros(3, dtype=torch.long),
                        position=torch.zeros(3, dtype=torch.long), token=torch.zeros(2, dtype=torch.long))
    s = ActivationStore(acts={"blocks.0.hook_resid_pre": torch.zeros(3, 4)}, example_id=torch.arange(3),
                        position=torch.zeros(3, dtype=torch.long), token=torch.zeros(3, dtype=torch.long),
                        labels={"y": torch.tensor([0, 1, 0])}, manifest={"n_layers": 1})
    assert s.label_mask["y"].all() and s.layers() == ["embed"] and s.path is None
