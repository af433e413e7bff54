"""A real Qwen2.5 on this CPU: HF generate vs steerlib's rollouts vs llama.cpp, one RLOO step vs TRL's,
and what bf16 costs in accuracy. One run, nothing else running; results under ``qwen_cpu``.

The model is Qwen2.5-Coder-0.5B-Instruct from its GGUF file on PyPI (:mod:`steerlib.sources`: hash
checked), dequantised by transformers; the prompts are GSM-Symbolic test problems in the chat template
with the paper's system prompt (:mod:`steerlib.gsm_symbolic`), sampled at tau = 1, top_p = 1.

1. Generation, ``--prompts`` x ``--k`` rows, ``--max-new`` tokens at most, the same prompts for every
   contender. Tokens/s counts *useful* tokens (each row up to and including its stop token) over the
   wall time of the whole call (prefill included):
   (a) ``hf_generate_fp32``: ``model.generate`` in float32, the batch of rows (a finished row keeps
   decoding as padding until every row has stopped); ``hf_generate_bf16`` the same in bf16 (to separate
   what the dtype buys from what the loop buys);
   (b) steerlib's rollouts: ``steerlib_fp32`` (float32), ``steerlib_bf16`` (bf16), ``steerlib_bf16_shared``
   (bf16, the system prompt's prefix computed once), ``steerlib_bf16_lean`` (the same through the lean
   decode loop of :mod:`steerlib.fastdecode`: the library's default for a bf16 model on a CPU);
   (c) ``llama_cpp``: the same GGUF file through ``llama-cpp-python`` (installed by hand, skipped without
   it; its Python API decodes one sequence at a time, so the rows run one after another, each a fresh
   completion of the same prompt).
2. One RLOO step (the last layer's vector, the same prompts, k and budget, the bf16 model) in steerlib
   (the preset's engine: shared prefix, lean bf16 decode, loss pass from the steered block) and in TRL's
   ``RLOOTrainer`` (``beta=0``, Adam over exactly the vector); each runs ``--steps`` steps, the last one
   is timed.
3. bf16 against float32: ``--accuracy`` held-out problems, one sample each at ``--accuracy-max-new``
   tokens (400: the CPU tier's budget), 128 rows at a time, the same per-prompt seeds in both dtypes
   (so the two samples of a problem share their random numbers and differ only by the dtype); pass@1
   of each, their paired difference with a 95% interval, the cut rate; and the largest difference of
   teacher-forced log-probs on a fixed batch (bf16's own completions of the first 8 problems).

Run: ``.venv/bin/python benchmarks/bench_qwen_cpu.py --parts generation,rloo`` (about 30 minutes on 2
cores), then ``--parts accuracy`` (over an hour: the float32 half is slow); each part is merged into
``qwen_cpu`` as soon as it finishes. ``--quick`` checks the script in a few minutes and records nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from common import RESULTS, record
from steerlib.data import render_prompt, stop_token_ids
from steerlib.gsm_symbolic import problems
from steerlib.presets import load_model, resolve_preset
from steerlib.rewards import default_verifier
from steerlib.rollout import sample_rollouts_chunked
from steerlib.sampling import left_pad, prompt_seed, shared_prefix_length
from steerlib.stats import paired_difference
from steerlib.steering import zero_vectors

PRESET = "qwen2.5-coder-0.5b"


def useful(tokens: torch.Tensor, stops: list[int]) -> int:
    """Tokens up to and including each row's first stop token, summed over rows."""
    is_stop = torch.isin(tokens, torch.tensor(stops))
    first = torch.where(is_stop.any(-1), is_stop.float().argmax(-1) + 1, torch.full_like(tokens[:, 0], tokens.shape[1]))
    return int(first.sum())


def hf_generate(model: Any, ids: list[list[int]], k: int, max_new: int, stops: list[int], pad: int) -> dict[str, Any]:
    rows = [p for p in ids for _ in range(k)]
    x, m = left_pad(rows, pad)
    torch.manual_seed(0)
    t = time.perf_counter()
    out = model.generate(input_ids=x, attention_mask=m, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                         max_new_tokens=max_new, eos_token_id=stops, pad_token_id=pad)
    secs = time.perf_counter() - t
    new = out[:, x.shape[1]:]
    n = useful(new, stops)
    return {"seconds": secs, "useful_tokens": n, "tokens_per_s": n / secs,
            "decoded_tokens_per_s": new.numel() / secs}


def steerlib_rollouts(model: Any, ids: list[list[int]], k: int, max_new: int, stops: list[int], pad: int,
                      **kw: Any) -> dict[str, Any]:
    t = time.perf_counter()
    ro = sample_rollouts_chunked(model, ids, k, eos_id=stops, pad_id=pad, max_new_tokens=max_new, kv_tokens=1 << 22,
                                 prompt_seeds=[prompt_seed(0, 0, i) for i in range(len(ids))], **kw)
    secs = time.perf_counter() - t
    n = int(ro.completion_mask.sum())
    return {"seconds": secs, "useful_tokens": n, "tokens_per_s": n / secs,
            "finished": float(ro.finished.float().mean())}


def llama_cpp(path: str, ids: list[list[int]], k: int, max_new: int) -> dict[str, Any]:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=max(len(p) for p in ids) + max_new + 8, n_threads=torch.get_num_threads(),
                n_batch=512, seed=0, verbose=False)
    t, n = time.perf_counter(), 0
    for i, p in enumerate(ids):
        for j in range(k):
            out = llm.create_completion(prompt=p, max_tokens=max_new, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
                                        repeat_penalty=1.0, seed=1000 * i + j)
            choice = out["choices"][0]
            n += out["usage"]["completion_tokens"] + (choice["finish_reason"] == "stop")  # its stop token too
    secs = time.perf_counter() - t
    import llama_cpp as lc

    return {"seconds": secs, "useful_tokens": n, "tokens_per_s": n / secs, "version": lc.__version__}


def steerlib_step(org: Any, preset: Any, prompts: list[str], answers: list[str], k: int, max_new: int,
                  stops: list[int], steps: int) -> float:
    from steerlib.recipes import engine_for
    from steerlib.rloo import RLOOConfig, RLOOTrainer, VectorTrainable

    model = org.model
    tr = VectorTrainable(model, zero_vectors(model, [preset.n_layers - 1]))
    cfg = RLOOConfig(prompts_per_step=len(prompts), completions_per_prompt=k, max_new_tokens=max_new, lr=0.1,
                     sampling="per_prompt")
    trainer = RLOOTrainer(tr, org.tokenizer, cfg, stop_ids=stops, engine=engine_for(preset))
    ids = org.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step(ids, answers)
        secs = time.perf_counter() - t
    return secs


def trl_step(org: Any, prompts: list[str], answers: list[str], k: int, max_new: int, steps: int,
             must_move: bool) -> float:
    from bench_trl import trl_steps

    return trl_steps(org, prompts * steps, answers * steps, steps, per_step=len(prompts), k=k, max_new=max_new,
                     lr=0.1, must_move=must_move)[-1]


def accuracy(orgs: dict[str, Any], n: int, max_new: int, stops: list[int]) -> dict[str, Any]:
    """Paired pass@1 of the bf16 and float32 models on ``n`` held-out problems, and their log-prob gap."""
    from steerlib.rloo import _token_logprobs

    probs = problems("test", n)
    tok = orgs["bfloat16"].tokenizer
    ids = tok([render_prompt(p.question, "qwen_math", tok) for p in probs], add_special_tokens=False)["input_ids"]
    seeds = [prompt_seed(7, 0, i) for i in range(n)]
    verifier = default_verifier()
    scores, cut, secs, rollouts = {}, {}, {}, {}
    for name, org in orgs.items():
        print(f"accuracy: sampling {n} problems in {name} ...", flush=True)
        t = time.perf_counter()
        ro = sample_rollouts_chunked(org.model, ids, 1, eos_id=stops, pad_id=tok.pad_token_id, max_new_tokens=max_new,
                                     kv_tokens=128 * (max(map(len, ids)) + max_new), prompt_seeds=seeds,
                                     shared_prefix=True)
        secs[name] = time.perf_counter() - t
        texts = tok.batch_decode([c[m.bool()].tolist() for c, m in zip(ro.completion_ids, ro.completion_mask)],
                                 skip_special_tokens=True)
        scores[name] = [verifier.score(x, p.answer) for x, p in zip(texts, probs)]
        cut[name] = 1 - float(ro.finished.float().mean())
        rollouts[name] = ro
    diff = paired_difference(scores["bfloat16"], scores["float32"])
    ro = rollouts["bfloat16"]
    rows = torch.arange(min(8, n))
    with torch.no_grad():
        lp = {name: _token_logprobs(org.model, ro, rows, 1.0).float() for name, org in orgs.items()}
    m = ro.completion_mask[rows].bool()
    gap = (lp["bfloat16"] - lp["float32"]).abs()[m]
    same = sum(a == b for a, b in zip(rollouts["bfloat16"].completion_ids.tolist(),
                                      rollouts["float32"].completion_ids.tolist()))
    return {"problems": n, "max_new_tokens": max_new, "pass_at_1": {k: sum(v) / n for k, v in scores.items()},
            "bf16_minus_fp32": {"mean": diff.estimate, "se": diff.se, "low": diff.estimate - 1.96 * diff.se,
                                "high": diff.estimate + 1.96 * diff.se},
            "cut_rate": cut, "seconds": secs, "identical_completions": same,
            "logprob_abs_diff": {"max": float(gap.max()), "mean": float(gap.mean()), "tokens": int(m.sum())}}


PARTS = ("generation", "rloo", "accuracy")


def save(part: dict[str, Any], quick: bool) -> None:
    """Merge ``part`` into ``qwen_cpu`` of results.json now, so a run cut short keeps what it measured."""
    print(part, flush=True)
    if not quick:
        old = json.loads(RESULTS.read_text()).get("qwen_cpu", {}) if RESULTS.exists() else {}
        record({"qwen_cpu": {**old, **part}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new", type=int, default=400)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--accuracy", type=int, default=256)
    ap.add_argument("--accuracy-max-new", type=int, default=400)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (each is "
                    "recorded as soon as it finishes; run them in separate calls to keep each under half an hour)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, nothing recorded")
    a = ap.parse_args()
    parts = a.parts.split(",")
    if not set(parts) <= set(PARTS):
        raise SystemExit(f"--parts: choose from {', '.join(PARTS)}, not {a.parts!r}")
    if a.quick:
        a.prompts, a.k, a.max_new, a.steps, a.accuracy = 2, 2, 12, 1, 4
    torch.set_num_threads(2)
    preset = resolve_preset(PRESET)
    orgs = {d: load_model(resolve_preset(PRESET, dtype=d), device="cpu") for d in ("float32", "bfloat16")}
    tok = orgs["float32"].tokenizer
    stops = stop_token_ids(tok, "qwen_math")
    probs = problems("test", a.prompts)
    prompts = [render_prompt(p.question, "qwen_math", tok) for p in probs]
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    pad = tok.pad_token_id
    setup = {"model": f"{preset.model} (GGUF Q4_K_M from PyPI, sha256 {preset.source.offline.sha256[:16]}..., "
                      "dequantised)",
             "setup": {"prompts": a.prompts, "k": a.k, "max_new_tokens": a.max_new, "shared_prefix_tokens":
                       shared_prefix_length(ids), "prompt_tokens_mean": sum(map(len, ids)) / len(ids),
                       "rloo_steps": a.steps, "threads": torch.get_num_threads()}}
    if "generation" in parts:
        t = time.perf_counter()
        m32, m16 = orgs["float32"].model, orgs["bfloat16"].model
        gen: dict[str, Any] = {}
        gen["hf_generate_fp32"] = hf_generate(m32, ids, a.k, a.max_new, stops, pad)
        gen["hf_generate_bf16"] = hf_generate(m16, ids, a.k, a.max_new, stops, pad)
        gen["steerlib_fp32"] = steerlib_rollouts(m32, ids, a.k, a.max_new, stops, pad, fast=False)
        gen["steerlib_bf16"] = steerlib_rollouts(m16, ids, a.k, a.max_new, stops, pad, fast=False)
        gen["steerlib_bf16_shared"] = steerlib_rollouts(m16, ids, a.k, a.max_new, stops, pad, fast=False,
                                                        shared_prefix=True)
        from steerlib.fastdecode import blocker

        why_not = blocker(m16, None, "all")  # the lean loop refuses hooked models (load_model adds one to lm_head)
        if why_not is None:
            gen["steerlib_bf16_lean"] = steerlib_rollouts(m16, ids, a.k, a.max_new, stops, pad, fast=True,
                                                          shared_prefix=True)
        else:
            print(f"steerlib_bf16_lean: skipped ({why_not})", flush=True)
        try:
            from steerlib.sources import QWEN25_CODER_05B, fetch

            gen["llama_cpp"] = llama_cpp(str(fetch(QWEN25_CODER_05B.offline)), ids, a.k, a.max_new)
        except ImportError:
            print("llama_cpp: skipped (pip install llama-cpp-python to time it)", flush=True)
        best = max((n for n in ("steerlib_bf16_shared", "steerlib_bf16_lean") if n in gen),
                   key=lambda n: gen[n]["tokens_per_s"])
        save({**setup, "generation": gen, "steerlib_best": best,
              "steerlib_vs_hf_generate_fp32": gen[best]["tokens_per_s"] / gen["hf_generate_fp32"]["tokens_per_s"],
              "steerlib_vs_hf_generate_bf16": gen[best]["tokens_per_s"] / gen["hf_generate_bf16"]["tokens_per_s"],
              "bf16_vs_fp32_steerlib": gen["steerlib_bf16"]["tokens_per_s"] / gen["steerlib_fp32"]["tokens_per_s"],
              "llama_cpp_vs_steerlib": (gen["llama_cpp"]["tokens_per_s"] / gen[best]["tokens_per_s"]
                                        if "llama_cpp" in gen else None),
              "generation_minutes": (time.perf_counter() - t) / 60}, a.quick)
    if "rloo" in parts:
        t = time.perf_counter()
        answers = [p.answer for p in probs]
        ours = steerlib_step(orgs["bfloat16"], preset, prompts, answers, a.k, a.max_new, stops, a.steps)
        trl_org = load_model(resolve_preset(PRESET, dtype="bfloat16"), device="cpu")  # TRL registers a parameter
        theirs = trl_step(trl_org, prompts, answers, a.k, a.max_new, a.steps, must_move=not a.quick)
        save({**setup, "rloo_step_seconds": {"steerlib": ours, "trl": theirs}, "rloo_steps_per_s_vs_trl": theirs / ours,
              "rloo_minutes": (time.perf_counter() - t) / 60}, a.quick)
    if "accuracy" in parts:
        t = time.perf_counter()
        orgs["bfloat16"] = load_model(resolve_preset(PRESET, dtype="bfloat16"), device="cpu")
        save({"bf16_accuracy": accuracy(orgs, a.accuracy, a.accuracy_max_new, stops),
              "accuracy_minutes": (time.perf_counter() - t) / 60}, a.quick)


if __name__ == "__main__":
    main()
