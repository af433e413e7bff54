"""What bounds generation on this CPU: an op profile of the benchmark rollout, lean loop against module loop.

The rollout of ``bench_generation.py`` (the main organism, 32 prompts x 8 samples, 64 new tokens, seed 0)
through the lean decode loop (``steerlib.fastdecode``, the default) and through the transformers modules
(``fast=False``), at 2 threads (one chapter alone) and at 1 thread (how ``make book`` runs two tasks side
by side):

- wall seconds, medians of 7, the two loops alternated;
- one profiled call of each: self CPU milliseconds grouped into matmuls (``mm``, ``addmm``: the model's
  projections), attention (``bmm``, ``softmax`` and the flash kernel), sampling (``multinomial`` and its
  exponential draws) and everything else, with the op count;
- the generation FLOP/s (the ``bench_generation`` count: 2 x linear weights per processed token) over the
  whole call and over its matmul time alone, as shares of the square-matmul peak at that thread count.

``--compile`` also compiles the lean decode step with ``torch.compile(dynamic=True)`` (inductor, C++ on a
CPU) and records the compile time, both loops' medians and whether the tokens are the same.

Run: ``.venv/bin/python benchmarks/bench_decode_profile.py [--compile]``
"""

from __future__ import annotations

import argparse
import time

import torch

from common import median, op_profile, record, timed
from steerlib import fastdecode
from steerlib.organism import load_organism
from steerlib.rollout import sample_rollouts
from steerlib.world import sample_problems

N_PROMPTS, K, MAX_NEW = 32, 8, 64
GROUPS = {
    "matmul": ("aten::mm", "aten::addmm"),
    "attention": ("aten::bmm", "aten::_softmax", "aten::_scaled_dot_product_flash_attention_for_cpu"),
    "sampling": ("aten::multinomial", "aten::exponential_"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true", help="also time the lean step under torch.compile")
    a = ap.parse_args()
    org = load_organism("main")
    model, tok = org.model, org.tokenizer
    ids = tok([p.prompt for p in sample_problems(N_PROMPTS, "train", 0)], add_special_tokens=False)["input_ids"]
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    def rollout(fast: bool):
        return sample_rollouts(model, ids, K, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                               max_new_tokens=MAX_NEW, generator=torch.Generator().manual_seed(0), fast=fast)

    ro = rollout(True)
    flops = 2 * linear * (sum(len(x) for x in ids) + int(ro.lengths.sum()))
    out: dict = {"setup": f"main organism, {N_PROMPTS} prompts x {K}, {MAX_NEW} new tokens, seed 0; "
                          f"{flops / 1e9:.2f} GFLOP of projections per call", "threads": {}}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        a_ = torch.randn(1024, 1024)
        peak = 2 * 1024**3 / median(timed(lambda: torch.mm(a_, a_), 20))
        rollout(True), rollout(False)  # warm-up at this thread count
        walls: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(7):
            for fast in (True, False):
                walls[fast].extend(timed(lambda: rollout(fast), 1))
        row = {"square_matmul_peak_flops_per_s": peak}
        for fast, name in ((True, "lean_loop"), (False, "module_loop")):
            secs = median(walls[fast])
            prof = op_profile(lambda: rollout(fast), GROUPS)
            row[name] = {"seconds": secs, "share_of_peak": flops / secs / peak, "profile_ms": prof,
                         "matmul_share_of_peak": flops / (prof["matmul"] / 1e3) / peak}
        row["lean_vs_module_speedup"] = row["module_loop"]["seconds"] / row["lean_loop"]["seconds"]
        out["threads"][str(threads)] = row
        print(f"{threads} thread(s): lean {row['lean_loop']['seconds']:.3f} s ({row['lean_loop']['share_of_peak']:.1%}"
              f" of peak), module {row['module_loop']['seconds']:.3f} s; lean profile {row['lean_loop']['profile_ms']}")
    if a.compile:
        torch.set_num_threads(2)
        eager = fastdecode.LeanBlocks.step
        want = rollout(True).completion_ids
        fastdecode.LeanBlocks.step = torch.compile(eager, dynamic=True)
        try:
            t = time.perf_counter()
            got = rollout(True).completion_ids
            first = time.perf_counter() - t
            compiled = median(timed(lambda: rollout(True), 7))
        finally:
            fastdecode.LeanBlocks.step = eager
        out["torch_compile"] = {"first_call_seconds": first, "compiled_seconds": compiled,
                                "eager_seconds": median(timed(lambda: rollout(True), 7)),
                                "same_tokens": bool(torch.equal(want, got)), "threads": 2}
        print("torch.compile:", out["torch_compile"])
    record({"generation_profile": out})


if __name__ == "__main__":
    main()
