"""transformers reads what ckptio.torch.save_sharded writes, and ckptio.torch.load_checkpoint reads
what save_pretrained writes. The model is built from a tiny config at test time (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ckptio.torch as ct

transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def assert_equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_from_pretrained_loads_save_sharded_output(tmp_path: Path) -> None:
    model = tiny_llama(0)
    result = ct.save_sharded(model.state_dict(), tmp_path, max_shard_size="40KB")
    assert len(result["shards"]) >= 3 and result["index"] == "model.safetensors.index.json"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())
    model.config.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert_equal_weights(model, loaded)
    ids = torch.tensor([[1, 5, 9, 2]])
    assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_load_checkpoint_reads_save_pretrained_output(tmp_path: Path) -> None:
    model = tiny_llama(0)
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    fresh = tiny_llama(1)
    keys = ct.load_checkpoint(fresh, tmp_path)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    assert_equal_weights(model, fresh)

    half = tiny_llama(2)
    ct.load_checkpoint(half, tmp_path / "model.safetensors.index.json", dtype=torch.bfloat16)
    assert half.model.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(half.model.embed_tokens.weight, model.model.embed_tokens.weight.to(torch.bfloat16))

    prefixed = ct.load_checkpoint(None, tmp_path, rename_keys={"model.": "backbone."})
    assert "backbone.norm.weight" in prefixed and "lm_head.weight" in prefixed
