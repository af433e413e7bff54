"""The real-model path on a GPU: chapter 01's first RLOO steps on a random-weight model built from the
published Qwen2.5-Math-1.5B config (bf16), beside the cost plan's projection; rollout throughput of the
own loop against Hugging Face ``generate``; peak memory of one real-vocabulary RLOO step.

Random weights never emit a stop token, so every completion runs to the budget: the measured step is
the plan's worst case (the plan also projects at the budget). Rewards are not computed (a zero
verifier): they cost CPU seconds, not GPU time, and random text earns none.

Run on a CUDA machine: ``PYTHONPATH=. python benchmarks/gpu_real_path.py --out gpu.json``; the figures
are merged into ``benchmarks/results.json`` under ``gpu_real_path`` by hand, with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if DEV == "cuda" else float("nan")


class ZeroVerifier:
    def score(self, text: str, answer: str) -> float:
        return 0.0


def qwen15b(layers: int | None = None):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from steerlib.plan import MODELS

    m = MODELS["Qwen/Qwen2.5-Math-1.5B"]
    cfg = Qwen2Config(vocab_size=m.vocab, hidden_size=m.hidden, intermediate_size=m.intermediate,
                      num_hidden_layers=layers or m.layers, num_attention_heads=m.heads, num_key_value_heads=m.kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=m.tied,
                      eos_token_id=151643, pad_token_id=151643)
    torch.manual_seed(0)
    with torch.device(DEV):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    return model.eval().requires_grad_(False)


class Tok:
    eos_token_id = pad_token_id = 151643

    def decode(self, ids, **kw):
        return " ".join(map(str, ids))

    def batch_decode(self, seqs, **kw):
        return [self.decode(s) for s in seqs]


def rloo_steps(model, prompts_per_step: int, k: int, max_new: int, prompt_len: int, steps: int,
               **budgets: int) -> dict:
    from steerlib.rloo import Engine, RLOOConfig, RLOOTrainer, VectorTrainable
    from steerlib.steering import zero_vectors

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 151000, (prompt_len,), generator=g).tolist() for _ in range(prompts_per_step)]
    cfg = RLOOConfig(prompts_per_step=prompts_per_step, completions_per_prompt=k, max_new_tokens=max_new, lr=1e-2)
    tr = RLOOTrainer(VectorTrainable(model, zero_vectors(model, [model.config.num_hidden_layers - 1])), Tok(), cfg,
                     ZeroVerifier(), engine=Engine(**budgets))
    rows = []
    for _ in range(steps):
        sync()
        if DEV == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        batch = tr.collect(prompts, ["0"] * len(prompts))
        batch["rewards"] = torch.arange(len(batch["rewards"])).remainder(3).eq(0).float()  # a signal to backprop
        sync()
        t1 = time.perf_counter()
        tr.update(batch)
        sync()
        t2 = time.perf_counter()
        rows.append({"rollout_s": t1 - t0, "update_s": t2 - t1, "peak_gb": peak_gb(),
                     "mean_completion_tokens": float(batch["rollouts"].lengths.float().mean()),
                     "micro_batch_tokens": getattr(tr, "micro_tokens", None)})
    return {"steps": rows, "prompts_per_step": prompts_per_step, "completions_per_prompt": k,
            "max_new_tokens": max_new, "prompt_len": prompt_len}


def generation_throughput(model, rows: int, prompt_len: int, new: int) -> dict:
    from steerlib.rollout import sample_rollouts

    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 151000, (prompt_len,), generator=g).tolist() for _ in range(rows)]
    out = {}
    for name in ("own_loop", "hf_generate", "own_loop_again"):
        sync()
        t0 = time.perf_counter()
        if name.startswith("own"):
            gen = torch.Generator(device=DEV).manual_seed(0)
            ro = sample_rollouts(model, prompts, 1, eos_id=-1, pad_id=151643, max_new_tokens=new, generator=gen)
            tokens = int(ro.lengths.sum())
        else:
            ids = torch.tensor(prompts, device=DEV)
            res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=new,
                                 min_new_tokens=new, pad_token_id=151643, top_p=1.0, top_k=0)
            tokens = int((res.shape[1] - prompt_len) * rows)
        sync()
        out[name] = {"tokens_per_s": tokens / (time.perf_counter() - t0), "tokens": tokens}
    return {"rows": rows, "prompt_len": prompt_len, "new_tokens": new, **out}


def real_vocab_model():
    """A config-built Qwen2 at vocabulary 151,936: hidden 64, two layers, random weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, eos_token_id=151643)
    torch.manual_seed(0)
    with torch.device(DEV):
        return Qwen2ForCausalLM(cfg).eval().requires_grad_(False)


def real_vocab_step_memory(**budgets: int) -> dict:
    """Peak GPU memory of one RLOO step of a config-built Qwen2 at vocabulary 151,936 (hidden 64, two
    layers, 512 new tokens) at 64 and 16 prompts x 8."""
    model = real_vocab_model()
    out = {}
    for p in (64, 16):
        if DEV == "cuda":
            torch.cuda.empty_cache()
        try:
            res = rloo_steps(model, p, 8, 512, 32, 1, **budgets)
            out[f"{p}x8"] = res["steps"][0]["peak_gb"] * 1000
        except torch.cuda.OutOfMemoryError as err:
            out[f"{p}x8"] = f"OutOfMemoryError: {str(err).splitlines()[0][:160]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    ap.add_argument("--memory-only", action="store_true",
                    help="only the real-vocabulary step memory: automatic budgets, the CPU's fixed budgets, and "
                         "(with --old DIR) the code in DIR")
    ap.add_argument("--old", default=None)
    args = ap.parse_args()

    res: dict = {"gpu": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__}
    if args.memory_only:
        if args.old:
            res["old_code"] = real_vocab_step_memory()
        else:
            res["automatic_budgets"] = real_vocab_step_memory()
            res["cpu_budgets"] = real_vocab_step_memory(micro_batch_tokens=32768, logit_elements=1 << 24,
                                                        kv_tokens=1 << 20)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res, indent=1))
        return
    from steerlib.plan import plan
    from steerlib.presets import resolve_preset

    t = time.perf_counter()
    if not args.smoke:
        res["real_vocab_step_peak_mb"] = real_vocab_step_memory()
        print("real-vocab memory", res["real_vocab_step_peak_mb"], f"{time.perf_counter() - t:.0f}s", flush=True)
    model = qwen15b(2 if args.smoke else None)
    P = resolve_preset("qwen2.5-math-1.5b", **({"prompts_per_step": 2, "max_new_tokens": 4} if args.smoke else {}))
    t = time.perf_counter()
    res["chapter01_steps"] = rloo_steps(model, P.prompts_per_step, P.completions_per_prompt, P.max_new_tokens, 200,
                                        args.steps)
    print("steps", json.dumps(res["chapter01_steps"]), f"{time.perf_counter() - t:.0f}s", flush=True)
    projected = plan("01_training", P, "h100")
    res["plan_h100"] = {"step_seconds": projected.seconds["training"] / P.steps, "peak_gb": projected.peak_gb,
                        "hours": projected.hours}
    t = time.perf_counter()
    res["rollout_tokens_per_s"] = generation_throughput(model, *((2, 8, 4) if args.smoke else (64, 200, 256)))
    print("generation", json.dumps(res["rollout_tokens_per_s"]), f"{time.perf_counter() - t:.0f}s", flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
