"""A shared prompt prefix (system prompt, few-shot examples) computed once: the same samples and the same
loss-pass gradient as computing it for every row."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steerlib.rloo import RLOOConfig, RLOOTrainer, Engine, VectorTrainable, _token_logprobs
from steerlib.rollout import sample_rollouts, sample_rollouts_chunked
from steerlib.sampling import shared_prefix_length
from steerlib.steering import zero_vectors
from tests.conftest import tiny_model

PREFIX = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]  # ten tokens every prompt starts with
PROMPTS = [PREFIX + [20, 21, 22], PREFIX + [23], PREFIX + [24, 25, 26, 27, 28]]


def _vectors(model, layer, dtype=torch.float64, scale=1.0):
    vecs = zero_vectors(model, [layer], "resid_post", dtype=dtype)
    with torch.no_grad():
        vecs[0].vector.copy_(scale * torch.randn(vecs[0].vector.shape, generator=torch.Generator().manual_seed(3),
                                                 dtype=dtype))
    return vecs


def test_shared_prefix_length():
    assert shared_prefix_length(PROMPTS) == 10
    assert shared_prefix_length(PROMPTS, minimum=11) == 0
    assert shared_prefix_length([PREFIX, PREFIX + [3]]) == 9  # the shortest keeps a token of its own
    assert shared_prefix_length([PREFIX]) == 0


@pytest.mark.parametrize("arch,dtype", [("qwen2", torch.float64), ("llama", torch.float64), ("qwen2", torch.bfloat16)])
def test_rollouts_with_a_shared_prefix_draw_the_same_tokens(arch, dtype):
    """Same prompt seeds, with and without the shared prefix: the same tokens (bf16 included), under a
    vector at every position; the rows are laid out prefix, padding, own tokens."""
    model = tiny_model(arch, dtype=dtype)
    vecs = _vectors(model, 1, scale=0.5)
    kw = dict(eos_id=2, pad_id=0, max_new_tokens=12, vectors=vecs, prompt_seeds=[11, 12, 13], fast=False)
    plain = sample_rollouts(model, PROMPTS, 4, **kw)
    shared = sample_rollouts(model, PROMPTS, 4, shared_prefix=True, **kw)
    assert torch.equal(plain.completion_ids, shared.completion_ids)
    assert torch.equal(plain.completion_mask, shared.completion_mask)
    assert shared.prompt_ids[4, :12].tolist() == PREFIX + [0, 0]  # prompt 1 (one own token) after its padding
    assert shared.prompt_mask[4].tolist() == [1] * 10 + [0] * 4 + [1]


def test_a_routed_batch_shares_the_prefix_once_per_group():
    """Routing gives rows different vectors inside the prefix: the prefix runs once per routing group
    (here three: two vectors and none), with the same tokens and captured states as without sharing."""
    model = tiny_model("qwen2")
    vecs = _vectors(model, 0) + _vectors(model, 1, scale=0.7)
    vecs = [dataclasses.replace(v, route=r) for r, v in enumerate(vecs)]
    kw = dict(eos_id=2, pad_id=0, max_new_tokens=8, vectors=vecs, routes=[0, 1, -1], prompt_seeds=[4, 5, 6],
              capture=[1, 1, 1])
    plain = sample_rollouts(model, PROMPTS, 2, **kw)
    shared = sample_rollouts(model, PROMPTS, 2, shared_prefix=True, **kw)
    assert torch.equal(plain.completion_ids, shared.completion_ids)
    assert shared.prompt_mask[2, :10].tolist() == [1] * 10  # shared: the prefix first
    # the captured hidden state of each real column, whichever layout
    for row in range(6):
        a = plain.hidden[row][torch.cat([plain.prompt_mask[row], plain.completion_mask[row]]).bool()]
        b = shared.hidden[row][torch.cat([shared.prompt_mask[row], shared.completion_mask[row]]).bool()]
        torch.testing.assert_close(a[:-1], b[:-1], rtol=1e-10, atol=1e-10)  # the last token is never fed


@pytest.mark.parametrize("capture,logit_elements", [(False, 1 << 62), (True, 1 << 62), (True, 2 * 48)])
def test_loss_pass_with_a_shared_prefix_matches_the_per_row_pass(capture, logit_elements):
    """The prefix run once (its KV cache expanded to the rows): the log-probs and the vector's gradient
    of the per-row pass (float64, 1e-10), from block 0 or from the steered block's captured hidden state,
    with the logits in one piece or in recomputed chunks. The vector steers the prefix too, so its
    gradient flows through the shared cache."""
    model = tiny_model("qwen2")
    tr = VectorTrainable(model, _vectors(model, 1))
    vectors, _ = tr.steering()
    ro = sample_rollouts_chunked(model, PROMPTS, 3, eos_id=2, pad_id=0, max_new_tokens=9, vectors=vectors,
                                 generator=torch.Generator().manual_seed(0), kv_tokens=1 << 20,
                                 capture=[1, 1, 1] if capture else None, shared_prefix=True)
    assert (ro.hidden is not None) == capture
    rows = torch.arange(9)
    m = ro.completion_mask.bool()
    out = []
    for shared in (True, False):
        with tr.context(None, ro.prompt_ids.shape[1]):
            logp = _token_logprobs(model, ro, rows, 1.0, logit_elements, shared_prefix=shared)
        (grad,) = torch.autograd.grad((logp * m).sum(), [tr.vectors[0].vector])
        out.append((logp[m], grad))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-10, atol=1e-10)
    assert out[1][1].abs().sum() > 0


def test_rloo_update_with_a_shared_prefix_moves_the_vector_as_without():
    """One RLOO step (rollouts and loss pass) with ``Engine(shared_prefix=True)`` and without: the same
    samples and the same updated vector (float64)."""
    from steerlib.world import build_tokenizer

    tok = build_tokenizer()
    model = tiny_model("qwen2")
    cfg = RLOOConfig(prompts_per_step=3, completions_per_prompt=3, max_new_tokens=10, lr=0.1, sampling="per_prompt")
    moved, samples = [], []
    for shared in (True, False):
        tr = VectorTrainable(model, _vectors(model, 1))
        trainer = RLOOTrainer(tr, tok, cfg, stop_ids=[2], engine=Engine(shared_prefix=shared))
        batch = trainer.collect(PROMPTS, ["1", "2", "3"])
        batch["rewards"] = torch.tensor([1.0, 0, 0, 0, 1, 0, 1, 1, 0])
        trainer.update(batch)
        samples.append(batch["rollouts"].completion_ids)
        moved.append(tr.vectors[0].vector.detach().clone())
    assert torch.equal(samples[0], samples[1])
    torch.testing.assert_close(moved[0], moved[1], rtol=1e-10, atol=1e-10)
    assert not torch.equal(moved[0], _vectors(model, 1)[0].vector)


def test_from_block_numbers_the_kept_blocks_from_zero_and_restores_them():
    from steerlib.rloo import _from_block

    model = tiny_model("qwen2")
    with _from_block(model, 1):
        assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1]
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1, 2]


def test_rollouts_with_a_shared_prefix_concatenate_with_others():
    """Rollouts made with a shared prefix concatenate with others (re-left-padded) like any rollouts."""
    model = tiny_model("qwen2")
    kw = dict(eos_id=2, pad_id=0, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    a = sample_rollouts(model, PROMPTS, 2, shared_prefix=True, **kw)
    b = sample_rollouts(model, [[5, 6]], 2, **kw)
    from steerlib.sampling import Rollouts

    both = Rollouts.cat([a, b], 0)
    assert both.prompt_ids.shape[1] == a.prompt_ids.shape[1]
    assert int(both.prompt_mask[-1].sum()) == 2 and both.prompt_mask[0, -1] == 1


def test_a_cut_completion_gets_the_cut_reward():
    """``cut_reward=0``: a completion cut at the budget scores 0 whatever its text; the recipe records the
    choice only when it is made (older run directories still resume)."""
    from steerlib.rloo import manifest_params
    from steerlib.world import build_tokenizer

    class Always:
        def score(self, text, answer):
            return 1.0

    model = tiny_model("qwen2")
    cfg = RLOOConfig(prompts_per_step=3, completions_per_prompt=2, max_new_tokens=3, sampling="per_prompt",
                     cut_reward=0.0)
    trainer = RLOOTrainer(VectorTrainable(model, _vectors(model, 1)), build_tokenizer(), cfg, verifier=Always(),
                          stop_ids=[2])
    batch = trainer.collect(PROMPTS, ["1", "2", "3"])
    finished = batch["rollouts"].finished
    assert not finished.all()
    assert batch["rewards"].tolist() == finished.float().tolist()
    assert "rloo.cut_reward" in manifest_params(cfg) and "rloo.cut_reward" not in manifest_params(RLOOConfig())
