"""rollout.py and rloo.py: sampling, advantages, multiplexed updates, exact resume."""

from __future__ import annotations

import pytest
import torch

from steerlib.rloo import (
    Engine,
    FullTrainable,
    LoraTrainable,
    RLOOConfig,
    RLOOTrainer,
    VectorTrainable,
    policy_loss,
    rloo_advantages,
    train,
)
from steerlib.rollout import sample_rollouts, sample_rollouts_chunked
from steerlib.steering import SteeringVector, steer, zero_vectors
from steerlib.world import sample_problems


def _pool(n=40, split="train"):
    probs = sample_problems(n, split, 0)
    return [p.prompt for p in probs], [str(p.answer) for p in probs]


def test_rloo_advantage_is_leave_one_out():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    adv = rloo_advantages(r, 3)
    expect = torch.tensor([1 - 0.5, 0 - 1.0, 1 - 0.5, 1 - 0.0, 0 - 0.5, 0 - 0.5])
    torch.testing.assert_close(adv, expect)
    assert rloo_advantages(torch.ones(4), 4).abs().sum() == 0  # all equal: no signal


def test_token_normalisation_is_the_global_token_mean():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -1.0])
    assert policy_loss(logp, mask, adv, "token", 3.0) == -((1 * -3.0) + (-1 * -1.0)) / 3
    assert policy_loss(logp, mask, adv, "sequence", 2.0) == -((1 * -1.5) + (-1 * -1.0)) / 2


def test_greedy_rollouts_match_hf_generate_under_routed_steering(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, _ = _pool(4, "test")
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    g = torch.Generator().manual_seed(0)
    vecs = [SteeringVector(torch.randn(model.config.hidden_size, generator=g) * 4, l, route=l) for l in (0, 1)]
    routes = [0, 1, 1, -1]
    ro = sample_rollouts(
        model,
        ids,
        2,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        max_new_tokens=30,
        temperature=0.0,
        vectors=vecs,
        routes=routes,
    )
    assert ro.completion_ids.shape[0] == 8 and ro.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for row in range(8):
        i = row // 2
        mine = [SteeringVector(v.vector, v.layer) for v in vecs if v.route == routes[i]]
        x = torch.tensor([ids[i]])
        if mine:
            with steer(model, mine):
                out = model.generate(
                    x, do_sample=False, max_new_tokens=30, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
                )
        else:
            out = model.generate(
                x, do_sample=False, max_new_tokens=30, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
            )
        new = out[0, x.shape[1] :].tolist()
        got = ro.completion_ids[row][ro.completion_mask[row].bool()].tolist()
        assert got == new[: len(got)] and len(got) == len(new)


def test_finished_rows_leave_the_batch(tiny_org, monkeypatch):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, _ = _pool(3, "test")
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    seen = []
    h = model.model.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].shape[0]), with_kwargs=True)
    try:
        gen = torch.Generator().manual_seed(1)
        ro = sample_rollouts(
            model, ids, 4, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, max_new_tokens=40, generator=gen
        )
    finally:
        h.remove()
    assert seen[0] == 3  # one prefill per prompt, shared by its 4 samples
    still_running = [int((ro.lengths > t + 1).sum()) for t in range(len(seen) - 1)]
    assert seen[1:] == still_running  # decode steps only carry unfinished rows


class ParityReward:
    """A reward with signal even for an untrained model: odd completion length in characters."""

    def score(self, completion: str, gold: str) -> float:
        return float(len(completion) % 2)


def _vec_trainer(model, tok, layers, routed, cfg, engine=None):
    return RLOOTrainer(VectorTrainable(model, zero_vectors(model, layers, routed=routed)), tok, cfg, engine=engine)


def test_multiplexed_update_equals_single_layer_updates(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, answers = _pool(6)
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    cfg = RLOOConfig(prompts_per_step=6, completions_per_prompt=4, max_new_tokens=24, lr=0.1)
    multi = _vec_trainer(model, tok, [0, 1], True, cfg, Engine(micro_batch_tokens=7 * 40))
    batch = multi.collect(ids, answers)
    batch["rewards"] = torch.randint(0, 2, batch["rewards"].shape).float()  # make sure there is signal
    multi.update(batch)
    n = 6 * 4
    for g, layer in enumerate((0, 1)):
        single = _vec_trainer(model, tok, [layer], False, cfg)
        ro = batch["rollouts"]
        sub = type(ro)(
            *(
                t[g * n : (g + 1) * n]
                for t in (
                    ro.prompt_ids,
                    ro.prompt_mask,
                    ro.completion_ids,
                    ro.completion_mask,
                    ro.prompt_index,
                    ro.finished,
                )
            )
        )
        single.update(
            {
                **batch,
                "rollouts": sub,
                "rewards": batch["rewards"][g * n : (g + 1) * n],
                "groups": [None],
                "routes": None,
            }
        )
        got, want = multi.tr.vectors[g].vector, single.tr.vectors[0].vector
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_resume_is_bit_identical(tiny_org, tmp_path):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, answers = _pool(40)
    cfg = RLOOConfig(
        prompts_per_step=4, completions_per_prompt=3, max_new_tokens=16, steps=5, lr=0.2
    )
    full_vecs = zero_vectors(model, [1])
    kw = dict(progress=False, verifier=ParityReward(), engine=Engine(checkpoint_every=2))
    train(VectorTrainable(model, full_vecs), tok, prompts, answers, cfg, run_dir=tmp_path / "a", **kw)
    part_vecs = zero_vectors(model, [1])
    train(
        VectorTrainable(model, part_vecs), tok, prompts, answers, cfg, run_dir=tmp_path / "b", stop_after=3, **kw
    )  # interrupted after step 3; the last checkpoint is at step 2
    resumed = zero_vectors(model, [1])
    rows = train(VectorTrainable(model, resumed), tok, prompts, answers, cfg, run_dir=tmp_path / "b", **kw)
    assert [r["step"] for r in rows] == list(range(5))
    assert full_vecs[0].vector.abs().sum() > 0
    assert torch.equal(full_vecs[0].vector, resumed[0].vector)


def test_run_dir_with_other_parameters_is_refused(tiny_org, tmp_path):
    import pytest

    from steerlib.runs import RunMismatchError

    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, answers = _pool(10)
    cfg = RLOOConfig(prompts_per_step=2, completions_per_prompt=2, max_new_tokens=4, steps=1)
    train(
        VectorTrainable(model, zero_vectors(model, [0])), tok, prompts, answers, cfg, run_dir=tmp_path, progress=False
    )
    with pytest.raises(RunMismatchError, match="lr"):
        train(
            VectorTrainable(model, zero_vectors(model, [0])),
            tok,
            prompts,
            answers,
            RLOOConfig(prompts_per_step=2, completions_per_prompt=2, max_new_tokens=4, steps=1, lr=1.0),
            run_dir=tmp_path,
            progress=False,
        )


def test_lora_and_full_trainables_update_only_their_weights(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, answers = _pool(4)
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    cfg = RLOOConfig(prompts_per_step=4, completions_per_prompt=2, max_new_tokens=8, lr=0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for tr in (
        LoraTrainable(model, r=2, alpha=2),
        LoraTrainable(model, layers=[1], r=1, alpha=1),
        FullTrainable(model),
    ):
        trainer = RLOOTrainer(tr, tok, cfg)
        start = {k: v.detach().clone() for k, v in tr.named_tensors().items()}
        batch = trainer.collect(ids, answers)
        batch["rewards"] = torch.tensor([1.0, 0.0] * 4)
        trainer.update(batch)
        assert any(not torch.equal(start[k], v) for k, v in tr.named_tensors().items())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # base untouched


def test_orthogonal_training_stays_orthogonal(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, answers = _pool(8)
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    d = model.config.hidden_size
    u = torch.randn(2, d, generator=torch.Generator().manual_seed(0))
    vecs = zero_vectors(model, [1])
    with torch.no_grad():
        vecs[0].vector.copy_(torch.randn(d, generator=torch.Generator().manual_seed(1)))
    tr = VectorTrainable(model, vecs, orthogonal_to=u)
    cfg = RLOOConfig(prompts_per_step=4, completions_per_prompt=4, max_new_tokens=12, lr=0.5)

    class LengthReward:  # any reward that varies within a group gives a gradient
        def score(self, text, answer):
            return float(len(text.split()) % 2)

    trainer = RLOOTrainer(tr, tok, cfg, verifier=LengthReward())  # type: ignore[arg-type]
    before = vecs[0].vector.detach().clone()
    for _ in range(2):
        trainer.step(ids[:4], answers[:4])
    eff = tr.effective_vectors()[0].vector.detach()
    assert not torch.equal(vecs[0].vector.detach(), before)
    assert float((u @ eff).abs().max()) < 1e-4 * float(eff.norm())
    plain = VectorTrainable(model, zero_vectors(model, [1]))
    assert plain.effective_vectors()[0] is plain.vectors[0]


def test_trimmed_loss_pass_equals_the_full_width_pass(tiny_org):
    from steerlib.rloo import _token_logprobs

    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, _ = _pool(6)
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    ro = sample_rollouts(
        model,
        ids,
        3,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        max_new_tokens=20,
        generator=torch.Generator().manual_seed(0),
    )
    rows = torch.arange(ro.completion_ids.shape[0])
    got = _token_logprobs(model, ro, rows, 0.7)
    full = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
    mask = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
    logits = model(input_ids=full, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[
        :, ro.prompt_ids.shape[1] - 1 : -1
    ]
    ref = (logits.float() / 0.7).log_softmax(-1).gather(-1, ro.completion_ids.unsqueeze(-1)).squeeze(-1)
    m = ro.completion_mask.bool()
    assert got.shape == ref.shape
    torch.testing.assert_close(got[m], ref[m], atol=1e-5, rtol=1e-5)


def _random_vectors(model, layers, site, routed=False):
    vecs = zero_vectors(model, layers, site, dtype=torch.float64, routed=routed)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for v in vecs:
            v.vector.copy_(torch.randn(v.vector.shape, generator=g, dtype=torch.float64))
    return vecs


@pytest.mark.parametrize("site", ["resid_post", "resid_pre", "post_attn", "v_in"])
def test_loss_pass_from_the_steered_block_equals_the_full_pass(site):
    """The rollout keeps the hidden state entering the steered block; the loss pass that starts there
    gives the full pass's log-probs and gradient (float64)."""
    import dataclasses

    from steerlib.rloo import _token_logprobs
    from tests.conftest import tiny_model

    model = tiny_model("qwen2")
    tr = VectorTrainable(model, _random_vectors(model, [1], site))
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    vectors, positions = tr.steering()
    # in chunks of one prompt: each chunk's hidden state is re-padded to the batch's prompt width
    ro = sample_rollouts_chunked(model, prompts, 3, eos_id=2, pad_id=0, max_new_tokens=9, vectors=vectors,
                                 generator=torch.Generator().manual_seed(0), capture=[1, 1, 1], kv_tokens=3 * 14)
    assert ro.hidden is not None and ro.hidden.shape == (9, 5 + 9, 16)
    rows = torch.arange(9)
    m = ro.completion_mask.bool()
    got, want = [], []
    for r, out in ((ro, got), (dataclasses.replace(ro, hidden=None, hidden_block=None), want)):
        with tr.context(None, ro.prompt_ids.shape[1]):
            logp = _token_logprobs(model, r, rows, 1.0)
        (grad,) = torch.autograd.grad((logp * m).sum(), [tr.vectors[0].vector])
        out += [logp[m], grad]
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-10)
    assert want[1].abs().sum() > 0


def test_multiplexed_rloo_update_from_the_rollout_equals_the_full_pass(tiny_org):
    """A routed sweep over layers 0 and 1 (each route starts at its own block): one RLOO update with
    the loss pass from the rollout's hidden state moves the vectors as the full pass does (float64)."""
    import copy

    model, tok = copy.deepcopy(tiny_org.model).double(), tiny_org.tokenizer
    prompts, answers = _pool(4)
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    cfg = RLOOConfig(prompts_per_step=4, completions_per_prompt=3, max_new_tokens=16, lr=0.1)
    moved = []
    for reuse in (True, False):
        tr = VectorTrainable(model, _random_vectors(model, [0, 1], "resid_post", routed=True))
        trainer = RLOOTrainer(tr, tok, cfg, engine=Engine(micro_batch_tokens=5 * 40, loss_from_rollout=reuse))
        batch = trainer.collect(ids, answers)
        assert (batch["rollouts"].hidden is not None) == reuse
        if reuse:
            assert batch["rollouts"].hidden_block.tolist() == [0] * 12 + [1] * 12
        batch["rewards"] = torch.tensor([1.0, 0, 0] * 8)
        trainer.update(batch)
        moved.append([v.vector.detach().clone() for v in tr.vectors])
    for a, b in zip(*moved):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
