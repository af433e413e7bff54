"""Data-parallel RLOO: two gloo processes on CPU against one process at the same global batch, and
per-prompt sampling that does not depend on the batch a prompt lands in."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.multiprocessing as mp

from steerlib.distributed import DataParallel
from steerlib.rloo import Engine, RLOOConfig, VectorTrainable, train
from steerlib.rollout import sample_rollouts
from steerlib.sampling import prompt_seed
from steerlib.steering import zero_vectors
from steerlib.world import sample_problems

CFG = RLOOConfig(prompts_per_step=4, completions_per_prompt=4, steps=3, max_new_tokens=16, lr=0.1,
                 sampling="per_prompt")
ENGINE = Engine(micro_batch_tokens=6 * 40)


class _Parity:
    """A reward with signal on any model: 1 for an odd number of characters (a deterministic function
    of the completion, like Math-Verify, without its worker processes)."""

    def score(self, completion: str, gold: str) -> float:
        return float(len(completion) % 2)


def _pool():
    probs = sample_problems(16, "train", 0)
    return [p.prompt for p in probs], [str(p.answer) for p in probs]


def _run(org, dp, cfg=CFG):
    model = copy.deepcopy(org.model).double()  # float64: what remains is the order of the all-reduce's sums
    tr = VectorTrainable(model, zero_vectors(model, [1], dtype=torch.float64))
    prompts, answers = _pool()
    rows = train(tr, org.tokenizer, prompts, answers, cfg, progress=False, dp=dp, verifier=_Parity(),
                 engine=ENGINE)
    return tr.vectors[0].vector.detach().clone(), rows


def _rank(rank: int, world: int, cache: str, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    from steerlib.organism import load_organism

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        org = load_organism("tiny", cache_dir=cache, progress=False)
        vec, rows = _run(org, DataParallel(rank, world))
        torch.save({"vector": vec, "rewards": [r["reward_mean"] for r in rows]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_end_with_the_single_process_vector(tiny_org, tiny_cache, tmp_path):
    """Two ranks (2 prompts each) and one process (4 prompts) after 3 RLOO steps: the same vector on
    every rank, equal to the single process's up to float64 rounding (the gradients are summed in
    another order; tolerance 1e-9), and the same global reward at every step."""
    cache = str(tiny_cache)  # where the fixture pretrained the organism: the ranks load it from there
    mp.spawn(_rank, args=(2, cache, str(tmp_path / "rdv"), str(tmp_path / "out")), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    want, rows = _run(tiny_org, DataParallel())
    assert want.abs().sum() > 0
    torch.testing.assert_close(got[0]["vector"], got[1]["vector"], rtol=0, atol=0)
    torch.testing.assert_close(got[0]["vector"], want, rtol=1e-9, atol=1e-9)
    assert got[0]["rewards"] == pytest.approx([r["reward_mean"] for r in rows])


def test_per_prompt_sampling_does_not_depend_on_the_batch(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, _ = _pool()
    ids = tok(prompts[:4], add_special_tokens=False)["input_ids"]
    seeds = [prompt_seed(0, 7, i) for i in range(4)]
    kw = dict(eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, max_new_tokens=16)
    whole = sample_rollouts(model, ids, 3, prompt_seeds=seeds, **kw)
    odd = sample_rollouts(model, ids[1::2], 3, prompt_seeds=seeds[1::2], **kw)
    rows = [r for p in (1, 3) for r in range(3 * p, 3 * p + 3)]
    assert torch.equal(whole.completion_ids[rows], odd.completion_ids)
    other = sample_rollouts(model, ids, 3, prompt_seeds=[prompt_seed(1, 7, i) for i in range(4)], **kw)
    assert not torch.equal(whole.completion_ids, other.completion_ids)
    assert len({tuple(r.tolist()) for r in whole.completion_ids[:3]}) > 1  # a prompt's k samples differ


def test_data_parallel_needs_per_prompt_sampling_and_enough_prompts(tiny_org):
    import dataclasses

    with pytest.raises(ValueError, match="per_prompt"):
        _run(tiny_org, DataParallel(0, 2), dataclasses.replace(CFG, sampling="batch"))
    with pytest.raises(ValueError, match="at least the number of processes"):
        _run(tiny_org, DataParallel(0, 8))
    assert os.environ.get("WORLD_SIZE") in (None, "1")


def test_launch_refuses_a_preset_that_samples_per_batch():
    from steerlib.launch import main

    with pytest.raises(SystemExit, match="per_prompt"):
        main(["01_training", "--preset", "organism"])
