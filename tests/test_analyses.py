"""headpatch, ablation, lens, propagation, transfer, traces: exact properties on config-built models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_model
from steerlib.ablation import attention_js, norm_attenuation, skip_attn, skip_layer
from steerlib.arch import model_parts
from steerlib.headpatch import group_heads, patch_attention
from steerlib.lens import lens_scores, next_token_shift, token_ranks, top_tokens
from steerlib.propagation import normalized_pair_accuracy, pair_configs, persistence
from steerlib.steering import SteeringVector, steer
from steerlib.traces import Forced, encode_pairs, record, run
from steerlib.stats import gain_share
from steerlib.transfer import transfer_vectors


def _forced(batch) -> Forced:
    ids, mask = batch
    lens = mask.sum(1).tolist()
    return Forced(ids, mask, [2, 2, 2], lens)


def _attn_out(model, batch, layer):
    """The attention output (after o_proj) of ``layer`` on a teacher-forced batch."""
    attn = model_parts(model).layers[layer].self_attn
    with record(model, {"a": attn}) as out:
        run(model, _forced(batch))
    return out["a"]


def _vec(seed=3, d=16, scale=2.0):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def test_full_patch_equals_attention_reading_the_steered_input(model, batch):
    """All heads, all projections = the attention of layer l reads norm(h + s); the residual stays unsteered."""
    layer, s = 2, _vec()
    block = model_parts(model).layers[layer]
    h_in = {}

    def pre(_m, args, kwargs):
        h_in["h"] = kwargs.get("hidden_states", args[0] if args else None)

    def swap(_m, args, kwargs):
        kwargs["hidden_states"] = block.input_layernorm(h_in["h"] + s)
        return args, kwargs

    handles = [
        block.register_forward_pre_hook(pre, with_kwargs=True),
        block.self_attn.register_forward_pre_hook(swap, with_kwargs=True),
    ]
    try:
        expect = run(model, _forced(batch))
    finally:
        for h in handles:
            h.remove()
    with patch_attention(model, s, layer):
        got = run(model, _forced(batch))
    real = batch[1].bool()
    torch.testing.assert_close(got[real], expect[real], atol=1e-10, rtol=0)
    assert not torch.allclose(got[real], run(model, _forced(batch))[real])
    assert "forward" not in block.self_attn.__dict__  # the class's forward is back
    assert type(block.self_attn.o_proj) is not torch.nn.Identity


def test_head_patches_add_up_and_groups_match_projections(model, batch):
    layer, s = 2, _vec()
    van = _attn_out(model, batch, layer)
    with patch_attention(model, s, layer):
        full = _attn_out(model, batch, layer)
    total = torch.zeros_like(van)
    for h in range(4):  # Steer-Head h: only head h steered; o_proj is linear, so the changes add up
        with patch_attention(model, s, layer, heads=[h]):
            total += _attn_out(model, batch, layer) - van
    torch.testing.assert_close(total, full - van, atol=1e-10, rtol=0)
    for g in range(2):  # steering group g's heads = feeding the steered input to group g's q, k, v only
        with patch_attention(model, s, layer, heads=group_heads(model, g)):
            a = _attn_out(model, batch, layer)
        with patch_attention(model, s, layer, projections={"q": [g], "k": [g], "v": [g]}):
            b = _attn_out(model, batch, layer)
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    with patch_attention(model, torch.zeros(16, dtype=torch.float64), layer, heads=[1]):
        torch.testing.assert_close(_attn_out(model, batch, layer), van, atol=1e-12, rtol=0)


@pytest.mark.parametrize("spec", [dict(heads=[1]), dict(heads=[0, 2, 3]), dict(projections={"v": [1]})])
def test_head_patch_generation_with_cache_matches_full_forward(model, batch, spec):
    ids, mask = batch
    s = _vec(scale=3.0)
    with patch_attention(model, s, 2, **spec):
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=5,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        full_mask = torch.cat([mask, torch.ones(3, 5, dtype=torch.long)], 1)
        f = Forced(gen.sequences, full_mask, [int(m) for m in mask.sum(1)], full_mask.sum(1).tolist())
        logits = run(model, f)
    for t in range(5):
        torch.testing.assert_close(
            gen.logits[t].double(), logits[:, ids.shape[1] - 1 + t].double(), atol=1e-5, rtol=1e-5
        )


def test_skip_sites_and_attention_js(model, batch):
    v = SteeringVector(_vec(), 1)
    assert (skip_attn(v).layer, skip_attn(v).site) == (2, "post_attn")
    assert (skip_layer(v).layer, skip_layer(v).site) == (2, "resid_post")
    f = _forced(batch)
    js0 = attention_js(model, f, [SteeringVector(torch.zeros(16, dtype=torch.float64), 1)], [2])
    assert np.abs(js0[2]).max() < 1e-12
    js = attention_js(model, f, [v], [2, 1])
    assert js[2].shape == (4,) and (js[2] > 0).all() and (js[2] <= math.log(2) + 1e-9).all()
    assert np.abs(js[1]).max() < 1e-12  # layer 1's own attention comes before its output vector
    assert model.config._attn_implementation != "eager"


def test_norm_attenuation(model, batch):
    f = _forced(batch)
    small = {0: SteeringVector(_vec(scale=1e-6), 0), 2: SteeringVector(_vec(scale=1e-6), 2)}
    res = norm_attenuation(model, f, small)
    assert set(res) == {0, 2} and all(r["raw"] > 0 and r["effective"] > 0 for r in res.values())
    big = norm_attenuation(model, f, {0: SteeringVector(_vec(scale=1e3), 0)})
    assert big[0]["effective"] < 2.01  # a normalised vector can move at most 2x the norm


def test_site_norms(model, batch):
    from steerlib.ablation import site_norms

    f = _forced(batch)
    norms = site_norms(model, f, 1)
    mods = {"in": model_parts(model).layers[0], "out": model_parts(model).layers[1]}
    with record(model, mods) as out:
        run(model, f)
    real = batch[1].bool()
    assert norms["resid_pre"] == pytest.approx(float(out["in"][real].norm(dim=-1).mean()), rel=1e-6)
    assert norms["resid_post"] == pytest.approx(float(out["out"][real].norm(dim=-1).mean()), rel=1e-6)
    assert norms["post_attn"] > 0


def test_lens_and_position_shift(model, batch):
    w = model_parts(model).lm_head.weight
    p = lens_scores(model, w[7], "prob")
    assert abs(float(p.sum()) - 1) < 1e-6
    assert int(lens_scores(model, w[7], "cossim").argmax()) == 7

    class Tok:
        all_special_ids = [0]

        def decode(self, ids):
            return f"t{ids[0]}"

    assert top_tokens(model, Tok(), w[7], k=1, ranking="cossim")[0][0] == "t7"
    assert all(t != "t0" for t, _ in top_tokens(model, Tok(), -w[0], k=5, ranking="cossim"))

    class PromptTok:
        pad_token_id = 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[int(x) for x in t.split()] for t in texts]}

    rank = token_ranks(model, PromptTok(), w[7], ["7", "3"])
    order = lens_scores(model, w[7], "prob").argsort(descending=True).tolist()
    assert rank == {"7": order.index(7) + 1, "3": order.index(3) + 1}

    prompts, comps = ["5 6 7", "9 3"], [[11, 12, 13], [14]]
    zero = next_token_shift(
        model, PromptTok(), prompts, comps, [SteeringVector(torch.zeros(16, dtype=torch.float64), 2)]
    )
    assert [len(k) for k in zero.kl] == [3, 1] and max(float(k.max()) for k in zero.kl) < 1e-12
    v = SteeringVector(_vec(), 2)
    shift = next_token_shift(model, PromptTok(), prompts, comps, [v])
    seq = torch.tensor([[5, 6, 7]])
    lp0 = model(seq).logits[0, -1].log_softmax(-1)
    with steer(model, v):
        lp1 = model(seq).logits[0, -1].log_softmax(-1)
    assert abs(float((lp1.exp() * (lp1 - lp0)).sum()) - shift.kl[0][0]) < 1e-9
    assert 0 < shift.first_token_share() < 1


def test_persistence_diagonal_is_exact(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    from steerlib.world import sample_problems

    prompts = [p.prompt for p in sample_problems(6, "test", 0)]
    g = torch.Generator().manual_seed(0)
    vecs = {l: SteeringVector(torch.randn(32, generator=g) * 3, l) for l in range(2)}
    p = persistence(model, tok, prompts, vecs, max_new_tokens=8, progress=False)
    for i in range(2):  # at the injection layer the shift is s_i itself at every token
        assert abs(p.diff_vector[i, i] - 1) < 1e-5 and abs(p.diff_diff[i, i] - 1) < 1e-5
    assert np.isnan(p.diff_vector[1, 0]) and not np.isnan(p.diff_vector[0, 1])
    assert p.final_shift[0].shape == (32,) and len(p.by_distance()) == 3
    assert set(pair_configs(vecs)) == {"base", "0", "1", "0+1"}
    assert normalized_pair_accuracy(0.8, 0.6, 0.7, 0.9) == pytest.approx(0.5)
    assert math.isnan(normalized_pair_accuracy(0.8, 0.6, 0.9, 0.9))


def test_transfer_checks_width_and_gain():
    a, b = tiny_model(seed=0), tiny_model("llama", seed=1)
    moved = transfer_vectors({1: SteeringVector(_vec(), 1)}, b)
    assert moved[1].layer == 1 and moved[1].vector.dtype == torch.float32
    with pytest.raises(ValueError, match="width"):
        transfer_vectors({1: SteeringVector(torch.zeros(8), 1)}, a)
    assert gain_share(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert gain_share(0.3, 0.4, 0.8) < 0 and math.isnan(gain_share(0.5, 0.4, 0.4))


def test_encode_pairs_layout():
    class PromptTok:
        pad_token_id = 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[int(x) for x in t.split()] for t in texts]}

    f = encode_pairs(PromptTok(), ["5 6", "7 8 9"], [[10, 11, 12], [13]])
    assert f.ids.tolist() == [[5, 6, 10, 11, 12], [0, 7, 8, 9, 13]]
    assert [f.gen_start(b) for b in range(2)] == [2, 4]
    assert f.generated_mask().tolist() == [[False, False, True, True, True], [False] * 4 + [True]]
    assert f.real_mask().sum().item() == sum(f.seq_len) == 9


@pytest.mark.parametrize("spec", [dict(heads=[1]), dict(projections={"v": [0]})])
def test_head_patch_under_the_shared_prefill_rollout_loop(spec):
    """The rollout loop repeats the cache for K samples and drops finished rows: the patched pass follows."""
    from steerlib.rollout import sample_rollouts

    model = tiny_model("qwen2", dtype=torch.float32)
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    s = _vec(scale=3.0).float()
    with patch_attention(model, s, 2, **spec):
        first = sample_rollouts(model, prompts, 2, eos_id=-1, pad_id=0, max_new_tokens=8, temperature=0.0)
        eos = int(first.completion_ids[0, 2])  # prompt 0's rows stop after three tokens, others later
        ro = sample_rollouts(model, prompts, 2, eos_id=eos, pad_id=0, max_new_tokens=8, temperature=0.0)
        full = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
        mask = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
        logits = run(model, Forced(full, mask, ro.prompt_mask.sum(1).tolist(), mask.sum(1).tolist()))
    assert int(ro.lengths.min()) < int(ro.lengths.max())  # rows really left the batch at different times
    width = ro.prompt_ids.shape[1]
    greedy = logits[:, width - 1 : -1].argmax(-1)  # what the teacher-forced patched model predicts
    m = ro.completion_mask.bool()
    assert torch.equal(greedy[m], ro.completion_ids[m])
