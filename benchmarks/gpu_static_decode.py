"""Static decoding on a GPU (``steerlib.static_decode``): is it right, and what does it buy?

1. Right: on a config-built float32 Qwen2 (random weights, stop tokens reachable), with per-prompt seeds,
   routed steering on two layers and hidden-state capture: the CUDA-graph replay against the same static
   loop run eagerly (same kernels: expected bit-identical), and both against the dynamic loop (the same
   draws; only float rounding may flip a token).
2. Throughput: a random-weight bf16 model with the published Qwen2.5-Math-1.5B shapes, 64 and 256 rows,
   200-token prompts, 256 new tokens (random weights never stop, so every row runs to the budget): the
   dynamic loop, the static loop eager, the static loop with a CUDA graph, and Hugging Face ``generate``.
3. Chapter 01's RLOO step on the same model (32 prompts x 8, 1,024 new tokens), dynamic and static: the
   rollout and update seconds of the step after a warm-up step; ``--rloo-steady SECONDS``: the two modes
   alternated step by step for about SECONDS (the steady state the first run did not reach).

Run on a CUDA machine: ``PYTHONPATH=.:benchmarks python benchmarks/gpu_static_decode.py --out gpu_static.json``;
the figures go into ``benchmarks/results.json`` under ``gpu_static_decode`` by hand, with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from gpu_real_path import DEV, qwen15b, rloo_steps, sync

from steerlib.rollout import sample_rollouts
from steerlib.sampling import prompt_seed
from steerlib.static_decode import sample_rollouts_static
from steerlib.steering import SteeringVector


def correctness() -> dict:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, pad_token_id=0,
                      eos_token_id=2)
    model = Qwen2ForCausalLM(cfg).to(DEV).float().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 64, (int(n),), generator=g).tolist() for n in torch.randint(3, 20, (12,), generator=g)]
    vecs = [SteeringVector(torch.randn(64, generator=g).to(DEV), layer=layer, route=i)
            for i, layer in enumerate((1, 3))]
    kw = dict(eos_id=[2, 3], pad_id=0, max_new_tokens=48, vectors=vecs, routes=[i % 2 for i in range(12)],
              prompt_seeds=[prompt_seed(0, 1, i) for i in range(12)], capture=[1 + 2 * (i % 2) for i in range(12)])
    dyn = sample_rollouts(model, prompts, 4, **kw)
    eager = sample_rollouts_static(model, prompts, 4, graph=False, **kw)
    graph = sample_rollouts_static(model, prompts, 4, graph=True, **kw)
    real = torch.cat([dyn.prompt_mask, dyn.completion_mask], 1).bool()
    rows_equal = (graph.completion_ids == dyn.completion_ids).all(-1)
    return {
        "rows": int(dyn.completion_ids.shape[0]), "rows_finished": int(dyn.finished.sum()),
        "graph_equals_eager_tokens": bool(torch.equal(graph.completion_ids, eager.completion_ids)),
        "graph_vs_eager_hidden_max_abs_diff": float((graph.hidden - eager.hidden).abs().max()),
        "static_vs_dynamic_rows_identical": int(rows_equal.sum()),
        "static_vs_dynamic_hidden_max_abs_diff_identical_rows": float(
            ((graph.hidden - dyn.hidden).abs() * real[..., None])[rows_equal].max()) if rows_equal.any() else None,
    }


def alternating(model, rows: int, prompt_len: int, new: int, rounds: int = 2) -> dict:
    """Dynamic and static (CUDA graph) calls alternated, ``rounds`` times each (the first call of a shape
    pays the GPU's warm-up, so a fair comparison times every mode after it)."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 151000, (prompt_len,), generator=g).tolist() for _ in range(rows)]
    out: dict = {"rows": rows, "prompt_len": prompt_len, "new_tokens": new, "dynamic": [], "static_graph": []}
    for _ in range(rounds):
        for name in ("dynamic", "static_graph"):
            sampler = sample_rollouts if name == "dynamic" else sample_rollouts_static
            sync()
            t0 = time.perf_counter()
            ro = sampler(model, prompts, 1, eos_id=-1, pad_id=151643, max_new_tokens=new,
                         generator=torch.Generator(device=DEV).manual_seed(0))
            sync()
            out[name].append(int(ro.lengths.sum()) / (time.perf_counter() - t0))
            print(name, rows, out[name][-1], flush=True)
    return out


def throughput(model, rows: int, prompt_len: int, new: int) -> dict:
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 151000, (prompt_len,), generator=g).tolist() for _ in range(rows)]
    out: dict = {"rows": rows, "prompt_len": prompt_len, "new_tokens": new}
    runs = {
        "dynamic": lambda gen: sample_rollouts(model, prompts, 1, eos_id=-1, pad_id=151643, max_new_tokens=new,
                                               generator=gen),
        "static_eager": lambda gen: sample_rollouts_static(model, prompts, 1, eos_id=-1, pad_id=151643,
                                                           max_new_tokens=new, generator=gen, graph=False),
        "static_graph": lambda gen: sample_rollouts_static(model, prompts, 1, eos_id=-1, pad_id=151643,
                                                           max_new_tokens=new, generator=gen, graph=True),
    }
    for name, run in runs.items():
        sync()
        t0 = time.perf_counter()
        ro = run(torch.Generator(device=DEV).manual_seed(0))
        sync()
        tokens = int(ro.lengths.sum())
        out[name] = {"tokens_per_s": tokens / (time.perf_counter() - t0), "tokens": tokens}
        print(name, rows, out[name], flush=True)
    ids = torch.tensor(prompts, device=DEV)
    sync()
    t0 = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=new,
                   min_new_tokens=new, pad_token_id=151643, top_p=1.0, top_k=0)
    sync()
    out["hf_generate"] = {"tokens_per_s": rows * new / (time.perf_counter() - t0), "tokens": rows * new}
    print("hf_generate", rows, out["hf_generate"], flush=True)
    return out


def rloo_alternating(model, budget_s: float, out: str, res: dict, prompts_per_step: int = 32, k: int = 8,
                     max_new: int = 1024, prompt_len: int = 200) -> None:
    """Chapter 01's RLOO step shape, dynamic and static decoding alternated step by step on one model (one
    warm-up step each, then rounds until ``budget_s`` is spent), so both modes see the same GPU state;
    every step is written to ``out`` as it ends."""
    from gpu_real_path import Tok, ZeroVerifier, peak_gb

    from steerlib.rloo import Engine, RLOOConfig, RLOOTrainer, VectorTrainable
    from steerlib.steering import zero_vectors

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 151000, (prompt_len,), generator=g).tolist() for _ in range(prompts_per_step)]
    trainers = {static: RLOOTrainer(VectorTrainable(model, zero_vectors(model, [model.config.num_hidden_layers - 1])),
                                    Tok(), RLOOConfig(prompts_per_step=prompts_per_step, completions_per_prompt=k,
                                                      max_new_tokens=max_new, lr=1e-2),
                                    ZeroVerifier(), engine=Engine(static_decode=static)) for static in (False, True)}
    res["rloo_alternating"] = {"prompts_per_step": prompts_per_step, "completions_per_prompt": k,
                               "max_new_tokens": max_new, "prompt_len": prompt_len, "steps": []}
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s:
        for static, tr in trainers.items():
            sync()
            if DEV == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            batch = tr.collect(prompts, ["0"] * len(prompts))
            batch["rewards"] = torch.arange(len(batch["rewards"])).remainder(3).eq(0).float()
            sync()
            t1 = time.perf_counter()
            tr.update(batch)
            sync()
            res["rloo_alternating"]["steps"].append({"static": static, "rollout_s": t1 - t0,
                                                     "update_s": time.perf_counter() - t1, "peak_gb": peak_gb()})
            print(json.dumps(res["rloo_alternating"]["steps"][-1]), flush=True)
            with open(out, "w") as f:
                json.dump(res, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    ap.add_argument("--alternating", action="store_true", help="only dynamic vs static, alternated, 2 rounds")
    ap.add_argument("--rloo-steady", type=float, metavar="SECONDS",
                    help="only chapter 01's RLOO step, dynamic and static alternated for about SECONDS")
    args = ap.parse_args()
    res: dict = {"gpu": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__}
    import transformers

    res["transformers"] = transformers.__version__
    if args.rloo_steady:
        sizes = dict(prompts_per_step=2, k=2, max_new=4, prompt_len=8) if args.smoke else {}
        rloo_alternating(qwen15b(2 if args.smoke else None), args.rloo_steady, args.out, res, **sizes)
        return
    if args.alternating:
        model = qwen15b()
        res["alternating"] = []
        for rows in (64, 256):
            res["alternating"].append(alternating(model, rows, 200, 256))
            with open(args.out, "w") as f:
                json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
        return
    t = time.perf_counter()
    if DEV == "cuda":
        res["correctness"] = correctness()
        print("correctness", res["correctness"], f"{time.perf_counter() - t:.0f}s", flush=True)
    model = qwen15b(2 if args.smoke else None)
    throughput(model, 8, 16, 8)  # warm-up (and, with --smoke, all there is)
    sizes = [] if args.smoke else [(64, 200, 256), (256, 200, 256)]
    res["throughput"] = [throughput(model, *s) for s in sizes]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    p, k, new = (2, 2, 4) if args.smoke else (32, 8, 1024)
    for static in (False, True):
        t = time.perf_counter()
        res[f"rloo_static_{static}"] = rloo_steps(model, p, k, new, 200, 2, static_decode=static)
        print("rloo", static, json.dumps(res[f"rloo_static_{static}"]), f"{time.perf_counter() - t:.0f}s", flush=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
