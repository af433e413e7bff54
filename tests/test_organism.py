"""organism.py: deterministic pretraining, the cache, the Llama twin."""

from __future__ import annotations

import pytest
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from steerlib.organism import ORGANISMS, build_model, load_organism, weights_hash
from steerlib.world import build_tokenizer


def test_tiny_organism_is_cached_and_deterministic(tiny_org, tmp_path):
    assert isinstance(tiny_org.model, Qwen2ForCausalLM)
    assert tiny_org.model.config.num_hidden_layers == ORGANISMS["tiny"].n_layers
    assert all(not p.requires_grad for p in tiny_org.model.parameters())
    loss = tiny_org.info["history"]["loss"]
    assert loss[-1] < loss[0] - 0.5  # it learned something
    again = load_organism("tiny", cache_dir=tiny_org.path.parent, progress=False)
    assert weights_hash(again.model) == tiny_org.info["weights_sha256"]
    fresh = load_organism("tiny", cache_dir=tmp_path, progress=False)  # pretrained from scratch again
    assert fresh.info["weights_sha256"] == tiny_org.info["weights_sha256"]
    assert weights_hash(fresh.model) == tiny_org.info["weights_sha256"]


def test_llama_twin_and_sibling_share_tokenizer_and_width():
    tok = build_tokenizer()
    llama = build_model(ORGANISMS["llama"], tok)
    qwen = build_model(ORGANISMS["main"], tok)
    sib = build_model(ORGANISMS["sibling"], tok)
    assert isinstance(llama, LlamaForCausalLM)
    assert llama.config.hidden_size == qwen.config.hidden_size == sib.config.hidden_size
    assert llama.config.num_hidden_layers == qwen.config.num_hidden_layers >= 6
    assert weights_hash(qwen) != weights_hash(sib)


def test_unknown_organism():
    with pytest.raises(ValueError, match="unknown organism 'huge'"):
        load_organism("huge")


def test_a_tuned_relative_continues_from_its_parent(tiny_org):
    import dataclasses

    import torch

    from steerlib.organism import OrganismConfig

    cfg = dataclasses.replace(ORGANISMS["tiny"], parent="tiny", steps=3, lr=1e-4, warmup=1, seed=5)
    assert cfg.key() != ORGANISMS["tiny"].key() and ORGANISMS["tuned"].parent == "main"
    assert OrganismConfig().key() == ORGANISMS["main"].key()
    tuned = load_organism("tiny-tuned", config=cfg, cache_dir=tiny_org.path.parent, progress=False)
    a, b = dict(tiny_org.model.named_parameters()), dict(tuned.model.named_parameters())
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert 0 < diff < 0.05  # a few small steps away from the parent, not a fresh initialisation
    assert all(
        torch.equal(p, q)
        for p, q in zip(
            tiny_org.model.parameters(),
            load_organism("tiny", cache_dir=tiny_org.path.parent, progress=False).model.parameters(),
        )
    )  # the parent is untouched
