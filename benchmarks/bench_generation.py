"""Generation: hook overhead, HF generate against steerlib's rollout loop, and FLOP/s against matmul peak.

- Hook overhead: tokens/s of sampling with a zero steering vector (hooks installed, adding zeros)
  against no hooks, same prompts and seed (the outputs are identical, so is the work).
- the rollout loop's lean decode step (``steerlib.fastdecode``, the default for the organism) against the
  same loop through the transformers modules (``fast=False``): same prompts, seed and samples.
- plain HF ``generate`` (every one of the K copies of a prompt prefilled, padded rows kept to the
  end) against ``rollout.sample_rollouts`` (shared prefill for the K samples of a prompt, finished
  rows leave the batch; ``evaluate.generate`` uses it too), same prompts x K samples.
- FLOP/s: a decoder forward costs about 2 x (non-embedding parameters + unembedding) FLOPs per token
  (attention scores are small at these lengths and left out); generation FLOP/s = that x tokens
  processed / seconds, against the measured FLOP/s of a torch matmul of the model's MLP shape with
  the decode batch as rows, and of a large square matmul (the machine's practical peak). The loss
  pass (teacher-forced forward + backward to the vector) is measured the same way at 4 x params
  FLOPs per token (forward 2, input gradients 2; no weight gradients are needed for a vector).
- Two streams: the same rollout in two processes side by side, one thread each (how ``make book`` runs
  chapters on 2 cores), started together after their warm-up; the machine's generation FLOP/s is the
  sum of the two, against the same 2-thread matmul peak. A 96-wide decode step is bound by per-op
  overhead, not arithmetic, so one stream cannot fill two cores; two streams can.

Run: ``.venv/bin/python benchmarks/bench_generation.py``
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import matmul_flops, median, record, timed
from steerlib.evaluate import generate
from steerlib.organism import load_organism
from steerlib.rollout import sample_rollouts
from steerlib.sampling import left_pad
from steerlib.steering import SteeringVector, steer, zero_vectors
from steerlib.world import sample_problems

N_PROMPTS, K, MAX_NEW = 32, 8, 64


def rollout(model, tok, ids, vectors=None, fast=None):
    """The benchmark's rollout: K samples per prompt at τ = 1, seed 0 (``fast``: see ``sample_rollouts``)."""
    return sample_rollouts(model, ids, K, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, max_new_tokens=MAX_NEW,
                           temperature=1.0, top_p=1.0, vectors=vectors, generator=torch.Generator().manual_seed(0),
                           fast=fast)


def one_stream(barrier: str, n_streams: int) -> None:
    """Child process of :func:`two_streams`: warm up, wait for the others, time the rollout, print JSON."""
    org = load_organism("main")
    model, tok = org.model, org.tokenizer
    ids = tok([p.prompt for p in sample_problems(N_PROMPTS, "train", 0)], add_special_tokens=False)["input_ids"]

    def fn() -> int:
        return int(rollout(model, tok, ids).lengths.sum())

    tokens = fn()
    Path(barrier, f"ready-{os.getpid()}").touch()
    while len(list(Path(barrier).glob("ready-*"))) < n_streams:
        time.sleep(0.01)
    secs = median(timed(fn, 9))
    print(json.dumps({"tokens": tokens, "prompt_tokens": sum(len(x) for x in ids), "seconds": secs,
                      "threads": torch.get_num_threads()}))


def two_streams(linear: int, peak: float) -> dict:
    """Two single-thread processes generating side by side: each one's figures and their summed FLOP/s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as barrier:
        procs = [subprocess.Popen([sys.executable, __file__, "--stream", barrier, "2"], env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    flops = sum(2 * linear * (o["prompt_tokens"] + o["tokens"]) / o["seconds"] for o in outs)
    return {"streams": outs, "flops_per_s": flops, "share_of_peak": flops / peak}


def main() -> None:
    torch.set_num_threads(2)
    org = load_organism("main")
    model, tok = org.model, org.tokenizer
    cfg = model.config
    probs = sample_problems(N_PROMPTS, "train", 0)
    prompts = [p.prompt for p in probs]
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    zero = [SteeringVector(torch.zeros(cfg.hidden_size), cfg.num_hidden_layers - 1)]

    rep = [x for x in ids for _ in range(K)]
    hf_ids, hf_mask = left_pad(rep, tok.pad_token_id)

    def hf(vectors=None):  # plain HF generate on the K-times repeated prompts (every row prefilled)
        torch.manual_seed(0)
        with steer(model, vectors) if vectors else contextlib.nullcontext():
            out = model.generate(
                input_ids=hf_ids,
                attention_mask=hf_mask,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=MAX_NEW,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        new = out[:, hf_ids.shape[1] :]
        ends = (new == tok.eos_token_id).int().argmax(-1)
        has = (new == tok.eos_token_id).any(-1)
        return int(torch.where(has, ends + 1, torch.full_like(ends, new.shape[1])).sum())

    def steerlib_eval(vectors=None):  # evaluate.generate: the same rollout loop behind the evaluation API
        return sum(c.n_tokens for c in generate(model, tok, prompts, n=K, max_new_tokens=MAX_NEW, vectors=vectors))

    def ours(vectors=None):
        return int(rollout(model, tok, ids, vectors).lengths.sum())

    def module_loop(vectors=None):  # the same rollout through the transformers modules (steerlib.fastdecode off)
        return int(rollout(model, tok, ids, vectors, fast=False).lengths.sum())

    hf(), ours(), module_loop(), steerlib_eval()  # warm-up
    res = {}
    for name, fn in (("hf_generate", hf), ("rollout", ours), ("rollout_module_loop", module_loop),
                     ("evaluate_generate", steerlib_eval)):
        tokens = fn()
        pairs = [(timed(fn, 1)[0], timed(lambda: fn(zero), 1)[0]) for _ in range(9)]  # interleaved: drift hits both
        plain, hooked = median([p for p, _ in pairs]), median([h for _, h in pairs])
        res[name] = {
            "tokens": tokens,
            "seconds": plain,
            "seconds_zero_vector": hooked,
            "tokens_per_s": tokens / plain,
            "hook_overhead": hooked / plain - 1,
        }
    # FLOPs per token: every linear layer's weights (embedding lookup excluded, unembedding included)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    prompt_tokens = sum(len(x) for x in ids)  # prefilled once per prompt by the rollout loop
    gen_flops = 2 * linear * (prompt_tokens + res["rollout"]["tokens"]) / res["rollout"]["seconds"]
    # the loss pass: teacher-forced prompt + completion with a trainable last-layer vector
    ro = rollout(model, tok, ids)
    full = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
    mask = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
    vec = zero_vectors(model, [cfg.num_hidden_layers - 1])

    def loss_pass():
        with steer(model, vec):
            out = model(input_ids=full, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
            out.logits.float().log_softmax(-1).mean().backward()

    loss_pass()
    loss_secs = median(timed(loss_pass, 3))
    loss_flops = 4 * linear * int(mask.sum()) / loss_secs
    decode_rows = N_PROMPTS * K
    shape_peak = matmul_flops(decode_rows, cfg.hidden_size, cfg.intermediate_size)
    peak = matmul_flops(1024, 1024, 1024)
    streams = two_streams(linear, peak)
    out = {
        "hook_overhead": max(r["hook_overhead"] for r in res.values()),
        "generation": res,
        "rollout_vs_hf_generate_speedup": res["hf_generate"]["seconds"] / res["rollout"]["seconds"],
        "rollout_fast_vs_module_loop_speedup": res["rollout_module_loop"]["seconds"] / res["rollout"]["seconds"],
        "generation_flops_per_s": gen_flops,
        "loss_pass_flops_per_s": loss_flops,
        "matmul_flops_per_s": {"decode_shape": shape_peak, "square_1024": peak},
        "generation_flops_share_of_peak": gen_flops / peak,
        "generation_flops_share_of_same_shape_matmul": gen_flops / shape_peak,
        "loss_pass_flops_share_of_peak": loss_flops / peak,
        "generation_two_streams": streams,
        "generation_flops_share_of_peak_two_streams": streams["share_of_peak"],
    }
    record(out)
    print(
        f"hook overhead: HF {res['hf_generate']['hook_overhead']:+.1%}, "
        f"rollout {res['rollout']['hook_overhead']:+.1%}; "
        f"rollout {out['rollout_vs_hf_generate_speedup']:.2f}x HF generate; generation {gen_flops / 1e9:.2f} GFLOP/s "
        f"= {out['generation_flops_share_of_peak']:.1%} of matmul peak {peak / 1e9:.1f} GFLOP/s; loss pass "
        f"{loss_flops / 1e9:.2f} GFLOP/s; two single-thread streams side by side: "
        f"{streams['flops_per_s'] / 1e9:.2f} GFLOP/s = {streams['share_of_peak']:.1%} of peak"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--stream":
        one_stream(sys.argv[2], int(sys.argv[3]))
    else:
        main()
