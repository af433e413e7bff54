"""Layer sweep: one multiplexed run over every layer against one single-layer run per layer, equal work.

Both do the same number of RLOO steps per layer on the same prompts (32 prompts x 8 completions per
layer per step, the organism preset). Ratio = multiplexed seconds / sum of the single-layer seconds
(medians per step after a warm-up step); below 1 means batching the layers together pays.

Each step is also split into its two phases, rollouts (with rewards) and the update (loss pass, backward,
optimizer step), recorded as medians per phase. Both sides do the same arithmetic: the multiplexed update
runs each layer's rows in their own group from that layer's block on (as a single-layer run does), so
only per-op and per-call costs amortised over a six-times-larger batch can separate them.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--steps 8]`` (7 timed steps per run; with fewer the
ratio moves by several percent on a shared machine)
"""

from __future__ import annotations

import argparse

import torch

from common import median, record, rloo_phase_times
from steerlib.organism import load_organism
from steerlib.rloo import RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.steering import zero_vectors
from steerlib.world import sample_problems


def phase_medians(org, layers, routed, ids, answers, steps, prompts=32, k=8) -> dict[str, float]:
    """Median seconds per step (after a warm-up step): whole step, rollouts, update."""
    vecs = zero_vectors(org.model, layers, routed=routed)
    cfg = RLOOConfig(prompts_per_step=prompts, completions_per_prompt=k, max_new_tokens=64, lr=5e-2)
    tr = RLOOTrainer(VectorTrainable(org.model, vecs), org.tokenizer, cfg)
    times = rloo_phase_times(tr, ids, answers, steps, prompts)[1:]
    return {"step": median([a + b for a, b in times]), "rollout": median([a for a, _ in times]),
            "update": median([b for _, b in times])}


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
    multi = phase_medians(org, list(range(n)), True, ids, answers, a.steps)
    singles = [phase_medians(org, [l], False, ids, answers, a.steps) for l in range(n)]
    seq = {key: sum(s[key] for s in singles) for key in multi}
    ratio = multi["step"] / seq["step"]
    record(
        {
            "sweep_vs_sequential": ratio,
            "sweep_step_seconds": {
                "multiplexed": multi["step"],
                "sequential_sum": seq["step"],
                "single_per_layer": [s["step"] for s in singles],
                "layers": n,
                "phases": {"multiplexed": multi, "sequential_sum": seq,
                           "single_per_layer": singles,
                           "ratio": {key: multi[key] / seq[key] for key in multi}},
            },
        }
    )
    print(f"multiplexed {multi['step']:.2f} s/step vs {n} single-layer runs {seq['step']:.2f} s/step: ratio {ratio:.2f}"
          f" (rollouts {multi['rollout']:.2f} vs {seq['rollout']:.2f}, "
          f"update {multi['update']:.2f} vs {seq['update']:.2f})")


if __name__ == "__main__":
    main()
