"""Fixed-shape sampling (steerlib.static_decode) against the dynamic loop, on config-built models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steerlib.rollout import sample_rollouts
from steerlib.sampling import prompt_seed
from steerlib.static_decode import sample_rollouts_static
from steerlib.steering import SteeringVector
from tests.conftest import tiny_model

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


def _vectors(model, layers):
    g = torch.Generator().manual_seed(3)
    return [SteeringVector(torch.randn(16, generator=g, dtype=torch.float64), layer=layer, route=i)
            for i, layer in enumerate(layers)]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_static_sampling_draws_what_the_dynamic_loop_draws(arch):
    """Per-prompt seeds, routed steering on two layers, 12 new tokens (rows stop at different steps):
    the same tokens, masks and stop flags as sample_rollouts; the captured hidden states agree wherever
    the dynamic loop fed a token (float64)."""
    model = tiny_model(arch)
    kw = dict(eos_id=[2, 3], pad_id=0, max_new_tokens=12, vectors=_vectors(model, [0, 2]), routes=[0, 1, 0],
              prompt_seeds=[prompt_seed(0, 1, i) for i in range(3)], capture=[0, 2, 0])
    want = sample_rollouts(model, PROMPTS, 4, **kw)
    got = sample_rollouts_static(model, PROMPTS, 4, check_every=3, **kw)
    assert want.finished.any() and not want.finished.all()  # some rows stop early: the masks matter
    for name in ("completion_ids", "completion_mask", "prompt_ids", "prompt_mask", "prompt_index", "finished",
                 "hidden_block"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    real = torch.cat([want.prompt_mask, want.completion_mask], 1).bool()
    torch.testing.assert_close(got.hidden[real], want.hidden[real], rtol=1e-10, atol=1e-10)


def test_static_sampling_with_one_generator_is_a_valid_sample():
    """One generator: every row draws at every step, so tokens differ from the dynamic loop, but each
    completion ends at its first stop token and nothing after it is kept."""
    model = tiny_model("qwen2")
    ro = sample_rollouts_static(model, PROMPTS, 3, eos_id=2, pad_id=0, max_new_tokens=10,
                                generator=torch.Generator().manual_seed(0))
    assert ro.completion_ids.shape == (9, 10)
    for ids, m, done in zip(ro.completion_ids.tolist(), ro.completion_mask.tolist(), ro.finished.tolist()):
        n = sum(m)
        assert m == [1] * n + [0] * (10 - n) and all(t == 0 for t in ids[n:])
        assert (2 in ids[:n]) == done and (not done or ids[n - 1] == 2) and 2 not in ids[: n - 1]


def test_static_sampling_refuses_what_it_cannot_do():
    model = tiny_model("qwen2")
    vec = _vectors(model, [1])[:1]
    vec = [dataclasses.replace(vec[0], route=None)]
    with pytest.raises(ValueError, match="every position"):
        sample_rollouts_static(model, PROMPTS, 2, eos_id=2, pad_id=0, vectors=vec, positions="completion")
    with pytest.raises(ValueError, match="CUDA"):
        sample_rollouts_static(model, PROMPTS, 2, eos_id=2, pad_id=0, graph=True)
    with pytest.raises(ValueError, match="check_every"):
        sample_rollouts_static(model, PROMPTS, 2, eos_id=2, pad_id=0, check_every=0)


class _LengthReward:  # a reward that varies within a group: a gradient from an untrained model
    def score(self, text: str, answer: str) -> float:
        return float(len(text) % 2)


def test_rloo_with_static_decoding_trains_from_the_same_rollouts(tiny_org):
    """Two RLOO steps with per-prompt seeds (a vector at block 1, loss pass from the rollout's hidden
    state): static decoding moves the vector as the dynamic loop does (same draws; rounding only), and
    the run records the choice."""
    from steerlib.rloo import Engine, RLOOConfig, RLOOTrainer, VectorTrainable, manifest_params
    from steerlib.steering import zero_vectors

    ids = [tiny_org.tokenizer.encode(p) for p in ("Q: 2+3=?\nA:", "Q: 17-4=?\nA:")]
    out = []
    for static in (False, True):
        cfg = RLOOConfig(prompts_per_step=2, completions_per_prompt=4, max_new_tokens=8, sampling="per_prompt", lr=0.5)
        tr = VectorTrainable(tiny_org.model, zero_vectors(tiny_org.model, [1]))
        trainer = RLOOTrainer(tr, tiny_org.tokenizer, cfg, verifier=_LengthReward(),  # type: ignore[arg-type]
                              engine=Engine(static_decode=static))
        for _ in range(2):
            trainer.step(ids, ["5", "13"])
        out.append(tr.vectors[0].vector.detach().clone())
    assert out[0].abs().sum() > 0
    torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-5)
    assert not any("static" in k for k in manifest_params(RLOOConfig()))  # the engine is never recorded
