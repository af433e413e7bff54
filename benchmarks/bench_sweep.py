"""Layer sweep: one multiplexed run over every layer against one single-layer run per layer, equal work.

Both do the same number of RLOO steps per layer on the same prompts (32 prompts x 8 completions per
layer per step, the organism preset). Ratio = multiplexed seconds / sum of the single-layer seconds
(medians per step after a warm-up step); below 1 means batching the layers together pays.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--steps 8]`` (7 timed steps per run; with fewer the
ratio moves by several percent on a shared machine)
"""

from __future__ import annotations

import argparse

import torch

from common import median, record, rloo_step_times
from steerlib.organism import load_organism
from steerlib.rloo import RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.steering import zero_vectors
from steerlib.world import sample_problems


def step_times(org, layers, routed, ids, answers, steps, prompts=32, k=8) -> list[float]:
    vecs = zero_vectors(org.model, layers, routed=routed)
    cfg = RLOOConfig(prompts_per_step=prompts, completions_per_prompt=k, max_new_tokens=64, lr=5e-2)
    tr = RLOOTrainer(VectorTrainable(org.model, vecs), org.tokenizer, cfg)
    return rloo_step_times(tr, ids, answers, steps, prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(2)
    org = load_organism("main")
    n = org.model.config.num_hidden_layers
    probs = sample_problems(32 * a.steps, "train", 0)
    ids = org.tokenizer([p.prompt for p in probs], add_special_tokens=False)["input_ids"]
    answers = [str(p.answer) for p in probs]
    multi = median(step_times(org, list(range(n)), True, ids, answers, a.steps)[1:])
    singles = [median(step_times(org, [l], False, ids, answers, a.steps)[1:]) for l in range(n)]
    ratio = multi / sum(singles)
    record(
        {
            "sweep_vs_sequential": ratio,
            "sweep_step_seconds": {
                "multiplexed": multi,
                "sequential_sum": sum(singles),
                "single_per_layer": singles,
                "layers": n,
            },
        }
    )
    print(f"multiplexed {multi:.2f} s/step vs {n} single-layer runs {sum(singles):.2f} s/step: ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
