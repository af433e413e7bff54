"""The loss pass from the steered block against the full pass, per layer (organism, one RLOO batch).

For each layer ``l`` of the main organism, one batch of rollouts (32 prompts x 8 completions, 64 new
tokens, the vector at ``l``) is collected once; then the update (teacher-forced log-probs, loss,
backward, Adam) is timed with the loss pass over every block (``loss_from_rollout=False``) and from the
hidden state the rollout kept at block ``l`` (``True``), alternating, medians of ``--repeat`` runs.
The saving is what the blocks below ``l`` cost in the forward pass; their backward was never run.

Run: ``.venv/bin/python benchmarks/bench_loss_pass.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import nn

from common import median, record
from steerlib.organism import load_organism
from steerlib.rloo import RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.steering import SteeringVector
from steerlib.world import sample_problems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    org = load_organism("main")
    probs = sample_problems(32, "train", 0)
    ids = org.tokenizer([p.prompt for p in probs], add_special_tokens=False)["input_ids"]
    answers = [str(p.answer) for p in probs]
    cfg = RLOOConfig(prompts_per_step=32, completions_per_prompt=8, max_new_tokens=64, lr=5e-2)
    out = {}
    for layer in range(org.model.config.num_hidden_layers):
        times: dict[bool, list[float]] = {True: [], False: []}
        trainers = {}
        for reuse in (True, False):
            vec = nn.Parameter(torch.zeros(org.model.config.hidden_size))
            trainers[reuse] = RLOOTrainer(VectorTrainable(org.model, [SteeringVector(vec, layer)]), org.tokenizer,
                                          dataclasses.replace(cfg, loss_from_rollout=reuse))
        batch = trainers[True].collect(ids, answers)  # the same rollouts for both (the hidden state kept)
        plain = {**batch, "rollouts": dataclasses.replace(batch["rollouts"], hidden=None, hidden_block=None)}
        for _ in range(a.repeat):
            for reuse in (True, False):
                t = time.perf_counter()
                trainers[reuse].update(batch if reuse else plain)
                times[reuse].append(time.perf_counter() - t)
        out[str(layer)] = {"full_s": median(times[False]), "from_block_s": median(times[True]),
                           "ratio": median(times[True]) / median(times[False])}
        print(layer, out[str(layer)], flush=True)
    record({"loss_pass_from_block": {"per_layer": out, "setup": "main organism, 32 prompts x 8 completions, 64 new "
                                     f"tokens, update only, medians of {a.repeat}, alternating"}})


if __name__ == "__main__":
    main()
