"""Memory: peak RSS of one RLOO step with a steering vector, a LoRA and the full fine-tune (equal batch),
and the optimizer state each keeps (the authors' efficiency table: 240 KB vs 13.8 GB at 14B).

Each method runs in a fresh child process (peak RSS is per process); the parent collects the figures.

Run: ``.venv/bin/python benchmarks/bench_memory.py``
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

METHODS = ("vector", "lora", "full")


def child(method: str) -> dict:
    import torch

    from steerlib.organism import load_organism
    from steerlib.rloo import FullTrainable, LoraTrainable, RLOOConfig, RLOOTrainer, VectorTrainable
    from steerlib.steering import zero_vectors
    from steerlib.world import sample_problems

    torch.set_num_threads(2)
    org = load_organism("main", progress=False)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = org.model.config.num_hidden_layers
    if method == "vector":
        tr = VectorTrainable(org.model, zero_vectors(org.model, [n - 1]))
    elif method == "lora":
        tr = LoraTrainable(org.model, r=4, alpha=4)
    else:
        tr = FullTrainable(org.model)
    probs = sample_problems(32, "train", 0)
    ids = org.tokenizer([p.prompt for p in probs], add_special_tokens=False)["input_ids"]
    trainer = RLOOTrainer(
        tr, org.tokenizer, RLOOConfig(prompts_per_step=32, completions_per_prompt=8, max_new_tokens=64, lr=1e-3)
    )
    trainer.step(ids, [str(p.answer) for p in probs])
    state = sum(
        v.numel() * v.element_size()
        for opt in trainer.opts
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v) and v.dim() > 0
    )
    params = sum(p.numel() for g in tr.param_groups() for p in g)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_rss_mb": peak / 1024,
        "rss_after_load_mb": base_rss / 1024,
        "trainable_params": params,
        "optimizer_state_bytes": state,
    }


def main() -> None:
    from common import record

    out = {}
    for m in METHODS:
        proc = subprocess.run([sys.executable, __file__, "--child", m], capture_output=True, text=True, check=True)
        out[m] = json.loads(proc.stdout.strip().splitlines()[-1])
    record(
        {
            "peak_rss_mb": {m: r["peak_rss_mb"] for m, r in out.items()},
            "optimizer_state_bytes": {m: r["optimizer_state_bytes"] for m, r in out.items()},
            "trainable_params": {m: r["trainable_params"] for m, r in out.items()},
        }
    )
    for m, r in out.items():
        print(
            f"{m:7s} peak RSS {r['peak_rss_mb']:.0f} MB, {r['trainable_params']:,} trainable, "
            f"optimizer state {r['optimizer_state_bytes']:,} B"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
    else:
        main()
