"""microbatch.py: length-sorted micro-batches for the loss pass (optimal cut, budgets, same update)."""

from __future__ import annotations

import copy
import itertools
import math

import torch

from steerlib.microbatch import length_batches, padded_positions
from steerlib.rloo import Engine, RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.steering import zero_vectors
from steerlib.world import sample_problems


def _cost(lengths, batches, width, pass_positions):
    return padded_positions(lengths, batches, width) + pass_positions * len(batches)


def test_length_batches_cover_every_row_once_within_the_budgets():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (200,), generator=g)
    batches = length_batches(lengths, prompt_width=18, token_budget=2000, row_cap=40, pass_positions=300)
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(200))
    for b in batches:
        assert len(b) <= 40 and len(b) * (18 + int(lengths[b].max())) <= 2000
    maxima = [int(lengths[b].max()) for b in batches]
    assert maxima == sorted(maxima)  # shortest completions first
    assert length_batches(torch.tensor([], dtype=torch.long), prompt_width=3, token_budget=10) == []


def test_length_batches_are_the_cheapest_cut():
    """Brute force over every cut of the sorted distinct lengths (no budget binding)."""
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        lengths = 4 * torch.randint(1, 12, (int(torch.randint(2, 30, (1,), generator=g)),), generator=g)
        pp = int(torch.randint(0, 400, (1,), generator=g))
        got = _cost(lengths, length_batches(lengths, prompt_width=7, token_budget=10**9, pass_positions=pp), 7, pp)
        values = sorted(set(lengths.tolist()))
        best = math.inf
        for mask in itertools.product((False, True), repeat=len(values) - 1):
            runs, cur = [], [values[0]]
            for v, cut in zip(values[1:], mask):
                if cut:
                    runs.append(cur)
                    cur = []
                cur.append(v)
            runs.append(cur)
            batches = [torch.nonzero(torch.isin(lengths, torch.tensor(r))).flatten() for r in runs]
            best = min(best, _cost(lengths, batches, 7, pp))
        assert got == best, trial


def test_length_batched_update_equals_the_plain_update(tiny_org):
    """A routed sweep over layers 0 and 1: the update over length-sorted micro-batches moves the vectors
    as the update over micro-batches in row order does (float64)."""
    model, tok = copy.deepcopy(tiny_org.model).double(), tiny_org.tokenizer
    probs = sample_problems(6, "train", 0)
    ids = tok([p.prompt for p in probs], add_special_tokens=False)["input_ids"]
    answers = [str(p.answer) for p in probs]
    cfg = RLOOConfig(prompts_per_step=6, completions_per_prompt=3, max_new_tokens=24, lr=0.1)
    moved, batch, parts = [], None, []
    for flag in (True, False):
        vecs = zero_vectors(model, [0, 1], dtype=torch.float64, routed=True)
        with torch.no_grad():
            for i, v in enumerate(vecs):
                g = torch.Generator().manual_seed(i)
                v.vector.copy_(torch.randn(v.vector.shape, generator=g, dtype=torch.float64))
        start = [v.vector.detach().clone() for v in vecs]  # the same for both runs
        trainer = RLOOTrainer(VectorTrainable(model, vecs), tok, cfg,
                              engine=Engine(micro_batch_tokens=6 * 40, length_batches=flag))
        if batch is None:
            batch = trainer.collect(ids, answers)
            batch["rewards"] = torch.tensor([1.0, 0, 0] * 12)
        ro = batch["rollouts"]
        group_lengths = ro.completion_mask[:18].sum(-1)
        parts.append([b.tolist() for b in trainer.micro_batches(group_lengths, ro.prompt_ids.shape[1])])
        trainer.update(batch)
        moved.append([v.vector.detach().clone() for v in vecs])
    assert parts[0] != parts[1]  # the sorted batching is another batching of the same rows
    assert sorted(sum(parts[0], [])) == sorted(sum(parts[1], [])) == list(range(18))
    for a, b, s0 in zip(*moved, start):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(a, s0)  # the update moved the vector
