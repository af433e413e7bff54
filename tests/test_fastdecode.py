"""The lean CPU decode loop (steerlib.fastdecode) against the module-by-module loop, on config-built models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steerlib.fastdecode import blocker, pays
from steerlib.rollout import sample_rollouts
from steerlib.sampling import prompt_seed
from steerlib.steering import SteeringVector, steer
from tests.conftest import tiny_model

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [4, 9, 9, 9]]


def _vectors(layers):
    g = torch.Generator().manual_seed(3)
    return [SteeringVector(torch.randn(16, generator=g, dtype=torch.float64), layer=layer, route=i)
            for i, layer in enumerate(layers)]


def _both(model, gen_seed=None, **kw):
    def gen():  # a fresh generator per loop
        return {} if gen_seed is None else {"generator": torch.Generator().manual_seed(gen_seed)}

    return (sample_rollouts(model, PROMPTS, 4, fast=False, **gen(), **kw),
            sample_rollouts(model, PROMPTS, 4, fast=True, **gen(), **kw))


def _assert_same(want, got):
    assert want.finished.any() and not want.finished.all()  # rows stop at different steps: compaction runs
    for name in ("completion_ids", "completion_mask", "prompt_ids", "prompt_mask", "prompt_index", "finished"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_fast_loop_draws_what_the_module_loop_draws(arch):
    """Per-prompt seeds, routed steering on two layers, capture on two blocks (float64): the same tokens,
    masks and stop flags, and the same hidden states wherever a token was fed (zeros elsewhere)."""
    model = tiny_model(arch)
    want, got = _both(model, eos_id=[2, 3], pad_id=0, max_new_tokens=12, vectors=_vectors([0, 2]),
                      routes=[0, 1, 0, 1], prompt_seeds=[prompt_seed(0, 1, i) for i in range(4)],
                      capture=[0, 2, 2, 0])
    _assert_same(want, got)
    assert torch.equal(got.hidden_block, want.hidden_block)
    torch.testing.assert_close(got.hidden, want.hidden, rtol=1e-10, atol=1e-10)


def test_fast_loop_in_bfloat16_steps_as_the_module_loop_does():
    """bf16 weights (a real model on a CPU with native bf16), where the lean loop is the default: one decode
    step after a shared-prefix prefill gives the module loop's logits up to bf16 rounding."""
    from transformers import DynamicCache

    from steerlib.fastdecode import LeanBlocks

    model = tiny_model("qwen2", dtype=torch.bfloat16)
    assert blocker(model, None, "all") is None and pays(model)
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 10, 11, 12]])
    mask = (ids > 0).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, past_key_values=cache)
        blocks = LeanBlocks(model, cache, 6)
        tok = torch.tensor([13, 14])
        lean = blocks.step(tok, pos[:, -1] + 1, 5, torch.zeros(2, 1, 1, 6, dtype=torch.bfloat16).masked_fill(
            ~torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1).bool()[:, None, None], float("-inf")), {}, None)
        full = model(input_ids=tok[:, None], attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1),
                     position_ids=pos[:, -1:] + 1, use_cache=True, past_key_values=cache).logits[:, -1]
    torch.testing.assert_close(lean.float(), full.float(), atol=0.05, rtol=0.05)
    assert torch.equal(lean.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_fast_loop_consumes_one_generator_as_the_module_loop_does(temperature, top_p):
    """One generator for the batch (evaluation): the running rows draw in the same order, so the samples
    are the same, with nucleus sampling and greedy too."""
    model = tiny_model("qwen2")
    vec = [dataclasses.replace(_vectors([1])[0], route=None)]
    want, got = _both(model, eos_id=2, pad_id=0, max_new_tokens=14, temperature=temperature, top_p=top_p,
                      vectors=vec, gen_seed=5)
    if temperature:
        _assert_same(want, got)
    else:  # greedy rows of one prompt are copies; some prompts may never stop
        assert torch.equal(got.completion_ids, want.completion_ids)


def test_fast_loop_is_the_default_only_where_it_is_allowed():
    model = tiny_model("qwen2")
    assert blocker(model, None, "all") is None and pays(model)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    wide = Qwen2ForCausalLM(Qwen2Config(vocab_size=48, hidden_size=512, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()
    assert blocker(wide, None, "all") is None and not pays(wide)  # allowed, but not the default
    assert "positions" in blocker(model, None, "generated")
    site = dataclasses.replace(_vectors([1])[0], route=None, site="mlp_in")
    assert "site" in blocker(model, [site], "all")
    assert "dtype" in blocker(tiny_model("qwen2", dtype=torch.float16), None, "all")
    with steer(model, [dataclasses.replace(site, site="resid_post")]):  # someone else's hooks: the module loop
        assert "hooks" in blocker(model, None, "all")
        with pytest.raises(ValueError, match="fast decoding is not possible here: hooks"):
            sample_rollouts(model, PROMPTS, 2, eos_id=2, pad_id=0, max_new_tokens=4, fast=True)
        sample_rollouts(model, PROMPTS, 2, eos_id=2, pad_id=0, max_new_tokens=4)  # falls back quietly
