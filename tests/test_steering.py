"""steering.py: every site, position mask and routing against hand-written forwards."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from steerlib.arch import UnsupportedModelError, model_parts
from steerlib.steering import POSITIONS, SITES, SteeringVector, steer, zero_vectors

D = 16


def _first(out):
    return out if isinstance(out, torch.Tensor) else out[0]


class Capture:
    """Records a module's input (layer input) or output during one forward pass."""

    def __init__(self, module: nn.Module, what: str = "output"):
        self.value = None
        if what == "output":
            self.h = module.register_forward_hook(lambda m, a, o: setattr(self, "value", _first(o)))
        else:
            self.h = module.register_forward_pre_hook(
                lambda m, a, k: setattr(self, "value", a[0] if a else k["hidden_states"]), with_kwargs=True
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.h.remove()


def _rand(seed: int = 3, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_resid_post_last_layer_is_a_shift_before_final_norm(model, batch):
    ids, mask = batch
    parts = model_parts(model)
    last = parts.n_layers - 1
    s = _rand()
    with Capture(parts.layers[last]) as cap:
        base = model(ids, attention_mask=mask).logits
    manual = parts.lm_head(parts.norm(cap.value + s))
    with steer(model, SteeringVector(s, last)):
        steered = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(steered, manual, rtol=0, atol=1e-12)
    assert (steered - base).abs().max() > 1e-3


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_resid_post_equals_down_proj_bias(model, batch, layer):
    ids, mask = batch
    s = _rand(layer)
    biased = copy.deepcopy(model)
    down = model_parts(biased).layers[layer].mlp.down_proj
    new = nn.Linear(down.in_features, down.out_features, bias=True, dtype=torch.float64)
    new.weight.data.copy_(down.weight.data)
    new.bias.data.copy_(s)
    model_parts(biased).layers[layer].mlp.down_proj = new
    with steer(model, SteeringVector(s, layer)):
        steered = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(steered, biased(ids, attention_mask=mask).logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("site", ["post_attn", "mlp_in", "resid_pre"])
def test_post_attn_mlp_in_resid_pre_match_hand_written_layer(model, batch, site):
    ids, mask = batch
    parts = model_parts(model)
    block = parts.layers[1]
    s = _rand(7)
    with Capture(block, "input") as x, Capture(block.self_attn) as attn:
        model(ids, attention_mask=mask)
    x, a = x.value, attn.value
    mlp, ln2 = block.mlp, block.post_attention_layernorm
    if site == "post_attn":
        h = x + a + s
        expected = h + mlp(ln2(h))
    elif site == "mlp_in":
        expected = x + a + mlp(ln2(x + a) + s)
    else:  # resid_pre changes attention too: compare with resid_post of the previous layer
        with steer(model, SteeringVector(s, 0, "resid_post")), Capture(block) as out:
            model(ids, attention_mask=mask)
        expected = out.value
    with steer(model, SteeringVector(s, 1, site)), Capture(block) as out:
        model(ids, attention_mask=mask)
    torch.testing.assert_close(out.value, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("group", [0, 1])
def test_v_in_adds_value_head_times_output_projection(model, batch, group):
    ids, mask = batch
    parts = model_parts(model)
    attn = parts.layers[2].self_attn
    s = _rand(11, 3.0)
    with Capture(attn) as base:
        model(ids, attention_mask=mask)
    with steer(model, SteeringVector(s, 2, "v_in", kv_group=group)), Capture(attn) as steered:
        model(ids, attention_mask=mask)
    hd, rep = parts.head_dim, parts.heads_per_group
    wv = attn.v_proj.weight[group * hd : (group + 1) * hd]
    wo = attn.o_proj.weight
    expected = sum((wv @ s) @ wo[:, h * hd : (h + 1) * hd].T for h in range(group * rep, (group + 1) * rep))
    # at every real (non-padding) position: there the attention weights sum to one
    diff = (steered.value - base.value)[mask.bool()]
    assert diff.shape[0] == int(mask.sum())
    torch.testing.assert_close(diff, expected.expand_as(diff), rtol=0, atol=1e-10)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("site", ["resid_post", "v_in", "mlp_in"])
def test_kv_cache_generation_matches_full_forward(model, batch, positions, site):
    ids, mask = batch
    P, new = ids.shape[1], 5
    vec = SteeringVector(_rand(5, 4.0), 1, site, kv_group=1 if site == "v_in" else None)
    with steer(model, vec, positions=positions):
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new,
            min_new_tokens=new,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    seq = gen.sequences
    full_mask = torch.cat([mask, torch.ones(ids.shape[0], new, dtype=mask.dtype)], 1)
    pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with steer(model, vec, positions=positions, prompt_length=P):
        full = model(seq, attention_mask=full_mask, position_ids=pos).logits
    for t, step_logits in enumerate(gen.logits):  # generate returns float32 logits
        torch.testing.assert_close(step_logits, full[:, P - 1 + t].float(), rtol=0, atol=1e-6)
    assert _no_hooks(model)


def test_position_masks_select_the_right_columns(model, batch):
    ids, mask = batch
    parts = model_parts(model)
    seq = torch.cat([ids, torch.full((3, 3), 5)], 1)
    s = _rand(2)
    expect = {
        "all": range(9),
        "prompt": range(6),
        "generated": range(6, 9),
        "first_generated": [6],
        "last_prompt": [5],
    }
    with Capture(parts.layers[0]) as base:
        model(seq)
    for positions, cols in expect.items():
        with steer(model, SteeringVector(s, 0), positions=positions, prompt_length=6):
            with Capture(parts.layers[0]) as out:
                model(seq)
        changed = ((out.value - base.value).abs().amax(-1) > 0).all(0).nonzero().flatten().tolist()
        assert changed == list(cols), positions


def test_routed_batch_equals_separate_runs(model, batch):
    ids, mask = batch
    vecs = [
        SteeringVector(_rand(1), 0, route=0),
        SteeringVector(_rand(2), 2, route=1),
        SteeringVector(_rand(4), 1, "v_in", kv_group=0, route=1),
    ]
    routing = [0, 1, -1]
    with steer(model, vecs, routing=routing):
        routed = model(ids, attention_mask=mask).logits
    for b, r in enumerate(routing):
        mine = [SteeringVector(v.vector, v.layer, v.site, v.kv_group) for v in vecs if v.route == r]
        with steer(model, mine):
            alone = model(ids[b : b + 1], attention_mask=mask[b : b + 1]).logits
        torch.testing.assert_close(routed[b : b + 1], alone, rtol=0, atol=1e-12)


def test_routing_requires_routes_and_matching_batch(model, batch):
    ids, mask = batch
    with pytest.raises(ValueError, match="no routing"):
        with steer(model, SteeringVector(_rand(), 0, route=0)):
            pass
    with pytest.raises(ValueError, match="routing has 2 rows"):
        with steer(model, SteeringVector(_rand(), 0, route=0), routing=[0, 0]):
            model(ids, attention_mask=mask)
    assert _no_hooks(model)


@pytest.mark.parametrize("site", SITES)
def test_zero_vectors_leave_logits_bit_identical(model, batch, site):
    ids, mask = batch
    base = model(ids, attention_mask=mask).logits
    vecs = zero_vectors(model, range(3), site, trainable=False, dtype=torch.float64)
    for positions in ("all", "prompt"):
        with steer(model, vecs, positions=positions):
            assert torch.equal(model(ids, attention_mask=mask).logits, base)


def test_hooks_removed_on_exit_and_on_error(model, batch):
    ids, mask = batch
    vecs = [SteeringVector(_rand(), layer, site) for layer in range(3) for site in SITES]
    with steer(model, vecs, positions="generated"):
        assert not _no_hooks(model)
    assert _no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, vecs):
            model(ids, attention_mask=mask)
            raise RuntimeError("boom")
    assert _no_hooks(model)


@pytest.mark.parametrize("site", SITES)
def test_gradients_reach_only_the_vectors(model, batch, site):
    ids, mask = batch
    vecs = zero_vectors(model, [0, 2], site, dtype=torch.float64)
    with steer(model, vecs):
        logits = model(ids, attention_mask=mask).logits
    logits.log_softmax(-1)[..., 7].sum().backward()
    for v in vecs:
        assert v.vector.grad is not None and v.vector.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_gradients_flow_with_gradient_checkpointing(batch):
    from conftest import tiny_model

    model = tiny_model("qwen2")
    model.gradient_checkpointing_enable()
    model.train()
    vecs = zero_vectors(model, [1], dtype=torch.float64)
    ids, mask = batch
    with steer(model, vecs):
        model(ids, attention_mask=mask).logits.log_softmax(-1)[..., 3].sum().backward()
    assert vecs[0].vector.grad is not None and vecs[0].vector.grad.abs().sum() > 0


def test_tuple_returning_layers_are_supported(model):
    """transformers 4.x decoder layers return (hidden, ...): the hook keeps the tail."""
    vec = SteeringVector(_rand(), 0)
    with steer(model, vec) as handle:
        hook = handle._out_hook([vec])
        h = torch.zeros(2, 3, D, dtype=torch.float64)
        out = hook(None, (), (h, "cache"))
    assert isinstance(out, tuple) and out[1] == "cache"
    torch.testing.assert_close(out[0], vec.vector.expand(2, 3, D))


def test_clear_errors_for_bad_placement(model):
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        with steer(model, SteeringVector(_rand(), 3)):
            pass
    with pytest.raises(ValueError, match="hidden size is 16"):
        with steer(model, SteeringVector(torch.zeros(8), 0)):
            pass
    with pytest.raises(ValueError, match="kv_group 2 out of range"):
        with steer(model, SteeringVector(_rand(), 0, "v_in", kv_group=2)):
            pass
    with pytest.raises(ValueError, match="unknown positions"):
        with steer(model, SteeringVector(_rand(), 0), positions="middle"):  # type: ignore[arg-type]
            pass
    assert _no_hooks(model)


def test_unsupported_architecture_names_what_is_missing():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20))
    with pytest.raises(UnsupportedModelError, match="lacks model.model"):
        model_parts(gpt2)
