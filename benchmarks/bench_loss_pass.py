"""The loss pass from the steered block against the full pass, per layer (organism, one RLOO batch).

For each layer ``l`` of the main organism, one batch of rollouts (32 prompts x 8 completions, 64 new
tokens, the vector at ``l``) is collected once; then the update (teacher-forced log-probs, loss,
backward, Adam) is timed with the loss pass over every block (``loss_from_rollout=False``) and from the
hidden state the rollout kept at block ``l`` (``True``), alternating, medians of ``--repeat`` runs.
The saving is what the blocks below ``l`` cost in the forward pass; their backward was never run.

Then one update per profiled layer (``--profile``, default the first and the middle one) runs under the
profiler (``loss_pass_profile``): self CPU milliseconds in matmuls (the projections, forward and the
input-gradient backward; the frozen weights get no gradient), in the flash-attention kernels (forward
and backward), in elementwise ops (norms, rotary, SiLU, residual adds and their backward) and the rest;
and the projections' FLOP/s over the matmul time and over the whole update, as shares of the
square-matmul peak. The FLOPs count the positions the pass computes (in each micro-batch, prompt and
completion columns up to its longest completion, padding included): 2 x the weights of the blocks'
linear layers per position, forward from block ``l`` and backward from block ``l + 1`` (the vector is
added after block ``l``), plus the unembedding forward and backward at the positions that predict
completion tokens.

Run: ``.venv/bin/python benchmarks/bench_loss_pass.py [--repeat 5] [--profile 0,3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import nn

from common import matmul_flops, median, op_profile, record
from steerlib.arch import model_parts
from steerlib.microbatch import padded_positions
from steerlib.organism import load_organism
from steerlib.rloo import Engine, RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.steering import SteeringVector
from steerlib.world import sample_problems


GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "elementwise": ("aten::mul", "aten::add", "aten::add_", "aten::silu", "aten::silu_backward", "aten::pow",
                    "aten::rsqrt", "aten::neg", "aten::div", "aten::where", "aten::sum", "aten::mean", "aten::cat",
                    "aten::copy_", "aten::fill_"),
}


def profile_update(trainer: RLOOTrainer, batch: dict, layer: int, peak: float) -> dict:
    """The op profile of one update from ``layer`` (see the module docstring) and its FLOP shares."""
    ro = batch["rollouts"]
    parts = model_parts(trainer.tr.model)

    def linear(blocks) -> int:
        return sum(m.weight.numel() for b in blocks for m in b.modules() if isinstance(m, nn.Linear))

    lengths, width = ro.completion_mask.sum(-1), ro.prompt_ids.shape[1]
    positions = padded_positions(lengths, trainer.micro_batches(lengths, width), width)  # one group here
    # the unembedding at the positions that predict completion tokens only
    head = 2 * parts.lm_head.weight.numel() * (positions - width * len(lengths) + len(lengths))
    # forward from block `layer`; backward from block `layer + 1` (the vector is added after block `layer`)
    flops = 2 * linear(parts.layers[layer:]) * positions + 2 * linear(parts.layers[layer + 1 :]) * positions + 2 * head
    prof = op_profile(lambda: trainer.update(batch), GROUPS)
    return {"profile_ms": prof, "gflop": flops / 1e9,
            "matmul_share_of_peak": flops / (prof["matmul"] / 1e3) / peak,
            "update_share_of_peak": flops / (prof["total"] / 1e3) / peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", default="0,3", help="comma-separated layers whose update is profiled")
    a = ap.parse_args()
    profiled = [int(x) for x in a.profile.split(",") if x.strip()]
    peak = matmul_flops(1024, 1024, 1024)
    profiles = {}
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
                                          cfg, engine=Engine(loss_from_rollout=reuse))
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
        if layer in profiled:
            profiles[str(layer)] = profile_update(trainers[True], batch, layer, peak)
            print("profile", profiles[str(layer)], flush=True)
    record({"loss_pass_from_block": {"per_layer": out, "setup": "main organism, 32 prompts x 8 completions, 64 new "
                                     f"tokens, update only, medians of {a.repeat}, alternating"},
            "loss_pass_profile": {"per_layer": profiles, "square_matmul_peak_flops_per_s": peak,
                                  "threads": torch.get_num_threads(),
                                  "setup": "one update from the layer's block (the rollouts' batch above), profiled"}})


if __name__ == "__main__":
    main()
