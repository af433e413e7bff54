"""Peak memory of one RLOO step at the real Qwen vocabulary (151,936) on this CPU, at two batch sizes.

A config-built Qwen2 (hidden 64, two layers, random weights: completions run to the 512-token budget)
takes one RLOO step (rollouts + loss pass + update) at 64 prompts x 8 and at 16 prompts x 8, each in a
fresh process; the figure is the process's peak resident memory during the step minus its resident
memory just before it. With the memory bounds (rollout chunks and loss micro-batches sized by the
logits and KV budgets, chunked log-probs) the two should be close; ``--code DIR`` runs the same step
against another checkout of steerlib (e.g. the code before the bounds) for comparison.

Run: ``.venv/bin/python benchmarks/bench_real_vocab.py [--code DIR] [--key real_vocab_step_peak_mb]``
(nothing else running). Figures are merged into ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[3]]  # the steerlib checkout, then benchmarks/ (gpu_real_path)
import torch
import gpu_real_path as g

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

model = g.real_vocab_model()
before = rss_mb()
t0 = time.perf_counter()
try:
    g.rloo_steps(model, int(sys.argv[2]), 8, 512, 32, 1)
    error = None
except (RuntimeError, MemoryError) as err:
    error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"step_peak_mb": peak - before, "process_peak_mb": peak, "seconds": time.perf_counter() - t0,
                  "error": error}))
"""


def measure(code: Path, prompts: int) -> dict:
    here = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(code), str(prompts), here], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"process ended with code {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", default=str(Path(__file__).resolve().parent.parent), help="checkout whose steerlib runs")
    ap.add_argument("--key", default="real_vocab_step_peak_mb")
    args = ap.parse_args()
    detail = {f"{p}x8": measure(Path(args.code), p) for p in (64, 16)}
    print(json.dumps(detail, indent=1))
    from common import record

    summary = {k: (round(v["step_peak_mb"], 1) if v.get("error") is None and "step_peak_mb" in v else v.get("error"))
               for k, v in detail.items()}
    record({args.key: summary, f"{args.key}_detail": detail})


if __name__ == "__main__":
    main()
