"""The loss pass over length-sorted micro-batches against row order, on a GPU, at chapter 01's real shape.

One RLOO update (the last layer's vector, the pass from the rollout's hidden state entering the last
block, as chapter 01 trains it) of a random-weight model built from the published Qwen2.5-Math-1.5B
config (bf16), on a synthetic batch of chapter 01's shape: 32 prompts x 8 completions, 200 prompt tokens,
1,024-token budget. Random weights never stop, so the completion lengths are drawn instead: uniform over
64-1,023 tokens with a fifth of the rows at the budget (an assumption about a real policy, stated in the
output). The update runs with ``length_batches`` off and on, alternated, ``--repeat`` times each; the
figures are the median seconds and the positions the pass computed.

Run on a CUDA machine: ``PYTHONPATH=. python benchmarks/gpu_length_batches.py --out gpu_len.json``
(``--smoke``: tiny sizes on a CPU). The figures are merged into ``benchmarks/results.json`` under
``gpu_length_batches`` by hand, with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gpu_real_path import DEV, Tok, ZeroVerifier, qwen15b, sync
from steerlib.microbatch import padded_positions
from steerlib.rloo import Engine, RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.sampling import Rollouts
from steerlib.steering import zero_vectors


def synthetic_batch(model, prompts: int, k: int, prompt_len: int, max_new: int, block: int) -> dict:
    """Rollouts of the given shape with drawn completion lengths and a random hidden state at ``block``."""
    g = torch.Generator().manual_seed(0)
    n = prompts * k
    lengths = torch.randint(min(64, max_new // 4), max_new, (n,), generator=g)
    lengths[torch.randperm(n, generator=g)[: n // 5]] = max_new
    comp_mask = (torch.arange(max_new)[None] < lengths[:, None]).long()
    d = model.config.hidden_size
    ro = Rollouts(
        prompt_ids=torch.randint(0, 151000, (n, prompt_len), generator=g).to(DEV),
        prompt_mask=torch.ones(n, prompt_len, dtype=torch.long, device=DEV),
        completion_ids=torch.randint(0, 151000, (n, max_new), generator=g).to(DEV),
        completion_mask=comp_mask.to(DEV),
        prompt_index=torch.arange(prompts).repeat_interleave(k),
        finished=lengths < max_new,
        hidden=torch.randn(n, prompt_len + max_new, d, generator=g).to(DEV, torch.bfloat16),
        hidden_block=torch.full((n,), block),
    )
    rewards = torch.arange(n).remainder(3).eq(0).float()  # a signal to backpropagate
    return {"rollouts": ro, "rewards": rewards, "groups": [None], "routes": None, "n_prompts": prompts,
            "seconds_generation": 0.0, "seconds_reward": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = ap.parse_args()
    model = qwen15b(2 if args.smoke else None)
    layer = model.config.num_hidden_layers - 1
    shape = (2, 2, 8, 16) if args.smoke else (32, 8, 200, 1024)
    batch = synthetic_batch(model, *shape, block=layer)
    trainers = {}
    for flag in (False, True):
        cfg = RLOOConfig(prompts_per_step=shape[0], completions_per_prompt=shape[1], max_new_tokens=shape[3],
                         lr=1e-2)
        trainers[flag] = RLOOTrainer(VectorTrainable(model, zero_vectors(model, [layer])), Tok(), cfg, ZeroVerifier(),
                                     engine=Engine(length_batches=flag))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):
        for flag in (False, True):
            sync()
            t = time.perf_counter()
            trainers[flag].update(batch)
            sync()
            times[flag].append(time.perf_counter() - t)
    lengths = batch["rollouts"].completion_mask.sum(-1).cpu()
    plain_batches, sorted_batches = (trainers[flag].micro_batches(lengths, shape[2]) for flag in (False, True))
    res = {
        "gpu": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
        "setup": f"random-weight Qwen2.5-Math-1.5B config, bf16; {shape[0]} prompts x {shape[1]}, {shape[2]} prompt "
                 f"tokens, completion lengths uniform {min(64, shape[3] // 4)}..{shape[3] - 1} with a fifth at the "
                 f"{shape[3]}-token budget "
                 f"(mean {float(lengths.float().mean()):.0f}); the last layer's vector, the pass from the last block; "
                 f"update only, medians of {args.repeat}, alternated (first call of each included)",
        "row_order": {"seconds": statistics.median(times[False]), "micro_batches": len(plain_batches),
                      "positions": padded_positions(lengths, plain_batches, shape[2])},
        "length_sorted": {"seconds": statistics.median(times[True]), "micro_batches": len(sorted_batches),
                          "positions": padded_positions(lengths, sorted_batches, shape[2])},
        "micro_batch_tokens": trainers[True].micro_tokens,
        "seconds": {str(k): v for k, v in times.items()},
    }
    res["speedup"] = res["row_order"]["seconds"] / res["length_sorted"]["seconds"]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
