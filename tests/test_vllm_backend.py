"""The vLLM backend's GPU-free parts: the vector as a down_proj bias acts on every generated token
exactly as the resid_post hook does, in-place updates keep the parameter, vLLM outputs become Rollouts,
and a missing vLLM is one clear line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from steerlib.steering import steer, zero_vectors
from steerlib.vllm_backend import VLLMRollouts, add_down_proj_bias, set_vector, to_rollouts
from tests.conftest import tiny_model


def _greedy_scores(model, ids, mask, n):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, min_new_tokens=n,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.scores, 1)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_down_proj_bias_equals_the_hook_on_every_generated_token(arch, batch):
    ids, mask = batch
    hooked, biased = tiny_model(arch), tiny_model(arch)
    vec = zero_vectors(hooked, [1], dtype=torch.float64)
    with torch.no_grad():
        vec[0].vector.copy_(torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    with steer(hooked, vec):
        want_seq, want = _greedy_scores(hooked, ids, mask, 12)
    set_vector(biased, 1, vec[0].vector)
    got_seq, got = _greedy_scores(biased, ids, mask, 12)
    plain_seq, plain = _greedy_scores(tiny_model(arch), ids, mask, 12)
    assert torch.equal(got_seq, want_seq)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)  # all 12 decode steps
    moved = torch.where(torch.isfinite(plain), got - plain, torch.zeros_like(plain)).abs().amax(-1)
    assert moved.min() > 1e-6  # the vector moved the logits at every step


def test_set_vector_updates_in_place():
    model = tiny_model()
    bias = add_down_proj_bias(model, 2)
    address = bias.data_ptr()
    set_vector(model, 2, torch.ones(16))
    set_vector(model, 2, torch.full((16,), 2.0))
    assert add_down_proj_bias(model, 2) is bias and bias.data_ptr() == address
    assert torch.equal(bias, torch.full((16,), 2.0, dtype=bias.dtype)) and not bias.requires_grad
    assert model.model.layers[1].mlp.down_proj.bias is None  # other layers untouched


def test_vllm_outputs_become_rollouts():
    def comp(toks, stop=None):
        return SimpleNamespace(token_ids=toks, stop_reason=stop)

    outs = [SimpleNamespace(prompt_token_ids=[5, 6, 7], outputs=[comp([9, 2]), comp([8, 8, 8, 8])]),
            SimpleNamespace(prompt_token_ids=[4], outputs=[comp([3], stop=2), comp([1, 1])])]
    ro = to_rollouts(outs, 2, pad_id=0, stop_ids=[2], max_new_tokens=4)
    assert ro.prompt_ids.tolist() == [[5, 6, 7]] * 2 + [[0, 0, 4]] * 2
    assert ro.prompt_mask.tolist() == [[1, 1, 1]] * 2 + [[0, 0, 1]] * 2
    assert ro.completion_ids.tolist() == [[9, 2, 0, 0], [8, 8, 8, 8], [3, 2, 0, 0], [1, 1, 0, 0]]
    assert ro.lengths.tolist() == [2, 4, 2, 2]
    assert ro.finished.tolist() == [True, False, True, False]
    assert ro.prompt_index.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="expected 2"):
        to_rollouts([SimpleNamespace(prompt_token_ids=[1], outputs=[comp([1])])], 2, pad_id=0, stop_ids=[2],
                    max_new_tokens=4)


def test_without_vllm_the_engine_is_one_clear_line():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'steerlib\[vllm\]'"):
            VLLMRollouts("Qwen/Qwen2.5-Math-1.5B", layer=27)
    else:
        pytest.skip("vLLM is installed here")
