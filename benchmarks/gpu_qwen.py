"""Chapter 09's tests on a GPU, in one short lease: the real Qwen2.5-Coder-0.5B-Instruct, its last two
layers' vectors trained at the paper's batch (32 prompts x 8 samples, 700-token completions) for as many
steps as a time box allows, then evaluated on held-out GSM-Symbolic problems; plus the speed issue's GPU
rows (HF generate vs steerlib's rollouts on CUDA) and what bf16 costs in accuracy there.

Everything is a library call the chapter also makes (:mod:`steerlib.recipes`, :mod:`steerlib.preset_eval`,
:mod:`steerlib.lens`, :mod:`steerlib.reallm`); the script only decides what fits the lease:

1. ``chapter``: one multiplexed run trains the penultimate (22) and last (23) layers' vectors together
   (each prompt group routed to one layer; the same prompts for both; own Adam state; the authors' rate
   0.1 of the last two layers), a snapshot after every step; training stops at ``--train-s`` seconds
   (SIGALRM: the step in flight is lost, every finished step is on disk) and the last snapshot is
   evaluated with the chapter's tests a-e (the middle layer and extra seeds do not fit a 15-minute lease).
2. ``accuracy``: bf16 against float32, paired, on ``--accuracy`` held-out problems (bench_qwen_cpu's).
3. ``generation``: HF ``generate`` (bf16 and float32) against steerlib's rollouts (bf16, shared prefix)
   on the same prompts, rows and token budget (bench_qwen_cpu's functions).

Each part writes ``<out>/<part>.json`` as soon as it finishes; a part that fails prints its traceback and
the next one runs. Run on a CUDA machine with the model assembled in ``$STEERLIB_CACHE``:
``PYTHONPATH=.:benchmarks python3 benchmarks/gpu_qwen.py --out $OUT``. ``--quick`` checks the script on
a CPU in a few minutes (tiny sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import torch

T0 = time.monotonic()


class TimeBox(Exception):
    """Raised by SIGALRM when the training time box ends."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise TimeBox


def provenance() -> dict[str, Any]:
    import transformers

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "commit": os.environ.get("COMMIT", "unknown"),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write(out: Path, name: str, data: dict[str, Any]) -> None:
    from steerlib.atomic import json_clean

    (out / f"{name}.json").write_text(json.dumps(json_clean(data), indent=1))
    print(f"[{time.monotonic() - T0:6.0f} s] wrote {name}.json", flush=True)


def chapter(org: Any, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    from steerlib.ablation import head_patch_specs, mlp_only, skip_attn, skip_layer
    from steerlib.data import split_prompts
    from steerlib.lens import PrefixTest, first_token_boost, lens_table, token_ranks
    from steerlib.preset_eval import evaluate_configs, evaluate_patched
    from steerlib.presets import load_model, resolve_preset
    from steerlib.reallm import PROCESS_WORDS, first_token_kl_share, first_token_rise, gain_shares
    from steerlib.recipes import train_vectors
    from steerlib.stats import paired_gain
    from steerlib.vectorfile import load_vectors

    P = resolve_preset("qwen2.5-coder-0.5b", steps=a.max_steps, checkpoints=tuple(range(1, a.max_steps + 1)),
                       prompts_per_step=a.prompts, completions_per_prompt=a.k, max_new_tokens=a.max_new,
                       eval_problems=a.problems)
    LAST, PEN = P.n_layers - 1, P.n_layers - 2
    run_dir = Path(a.run_dir)
    t = time.monotonic()
    if a.train_s > 0:  # 0: evaluate the run folder's last snapshot (trained in an earlier call)
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(a.train_s)
        try:
            train_vectors(org, P, [PEN, LAST], run_dir, mode="multiplexed", lr=0.1)
            signal.alarm(0)
        except TimeBox:  # the interrupted step leaves its routed hooks on the model: load it afresh
            print(f"training stopped by the {a.train_s} s time box", flush=True)
            org = load_model(resolve_preset("qwen2.5-coder-0.5b"))
    train_wall = time.monotonic() - t
    steps = sorted(int(p.stem.split("-")[1]) for p in run_dir.glob("snapshot-*.safetensors"))
    if not steps:
        raise RuntimeError("no training step finished inside the time box")
    step = steps[-1]
    snap = run_dir / f"snapshot-{step}.safetensors"
    vecs = {v.layer: v for v in load_vectors(snap, org.model).vectors}
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][:step]
    print(f"[{time.monotonic() - T0:6.0f} s] {step} steps trained; evaluating", flush=True)
    pen = vecs[PEN]
    evals = evaluate_configs(org, P, {"base": [], f"+ s{LAST}": [vecs[LAST]], f"+ s{PEN}": [pen],
                                      "Skip-Attn": [skip_attn(pen)], "Skip-Layer": [skip_layer(pen)],
                                      "MLP-only": [mlp_only(pen)]}, split="test", n_problems=a.problems)
    gains = {n: paired_gain(r, evals["base"]) for n, r in evals.items() if n != "base"}
    res: dict[str, Any] = {
        "preset": "qwen2.5-coder-0.5b", "model": P.model, "weights_sha256": org.info.get("weights_sha256"),
        "dtype": org.info.get("dtype"), "layers": [LAST, PEN], "mode": "multiplexed", "lr": 0.1,
        "prompts_per_step": P.prompts_per_step, "completions_per_prompt": P.completions_per_prompt,
        "max_new_tokens": P.max_new_tokens, "steps_trained": step, "train_time_box_s": a.train_s,
        "train_wall_s": train_wall,  # this call's (about 0 with --train-s 0: the steps ran in an earlier call)
        "n_test_problems": a.problems,
        "training": metrics,  # every step's row of the run's metrics.jsonl
        "pass_at_1": {n: r.pass_at_1 for n, r in evals.items()}, "stderr": {n: r.stderr for n, r in evals.items()},
        "cut_rate": {n: r.cut_rate for n, r in evals.items()},
        "mean_length": {n: r.mean_length for n, r in evals.items()},
        "gain": {n: g.estimate for n, g in gains.items()}, "gain_se": {n: g.se for n, g in gains.items()},
        "first_tokens": {n: dict(evals[n].top_first_tokens(5)) for n in ("base", f"+ s{LAST}", f"+ s{PEN}")},
        "process_word_ranks": {f"s{l}": token_ranks(org.model, org.tokenizer, v.vector, list(PROCESS_WORDS))
                               for l, v in vecs.items()},
        "lens": lens_table(org.model, org.tokenizer, {l: v.vector for l, v in vecs.items()}, k=8),
    }
    write(out, "chapter", res)  # the core numbers first: what follows is extra
    prompts, _ = split_prompts(P, org.tokenizer, "test", a.problems)
    res["first_token_kl_share"] = first_token_kl_share(org.model, org.tokenizer, prompts, evals[f"+ s{LAST}"],
                                                       [vecs[LAST]])
    res["mean_length_steered"] = evals[f"+ s{LAST}"].mean_length
    boost = first_token_boost(org.model, org.tokenizer, prompts, [vecs[LAST]], k=5, batch_size=16)
    res["first_token_boost"] = [{"token": t, "p_base": b, "p_steered": s} for t, b, s in boost]
    prefix = boost[0][0]
    rise = first_token_rise(evals[f"+ s{LAST}"], evals["base"], prefix)
    res["prefix_share_rise"], res["prefix_share_rise_se"] = rise.estimate, rise.se
    write(out, "chapter", res)
    test = PrefixTest(prefix, {"base": evals["base"], "vector": evals[f"+ s{LAST}"],
                               **evaluate_configs(org, P, {"prefix": []}, split="test", n_problems=a.problems,
                                                  prefix=prefix)})
    res.update({k: v for k, v in test.summary().items() if k.startswith("prefix") and "retrained" not in k
                and "plus" not in k})
    spec = {"V-head patch": head_patch_specs(org.model)["v-only, all groups"]}
    patch = evaluate_patched(org, P, pen.vector, LAST, spec, split="test", n_problems=a.problems)
    res["pass_at_1"]["V-head patch"] = patch["V-head patch"].pass_at_1
    res["penultimate_shares"] = gain_shares({**evals, **patch}, f"+ s{PEN}",
                                            ["Skip-Attn", "Skip-Layer", "MLP-only", "V-head patch"])
    res["seconds"] = time.monotonic() - t
    write(out, "chapter", res)
    return res


def accuracy_part(orgs: dict[str, Any], a: argparse.Namespace, out: Path) -> None:
    from bench_qwen_cpu import accuracy

    from steerlib.data import stop_token_ids

    stops = stop_token_ids(orgs["bfloat16"].tokenizer, "qwen_math")
    t = time.monotonic()
    write(out, "accuracy", {**accuracy(orgs, a.accuracy, a.max_new, stops), "seconds": time.monotonic() - t})


def generation_part(orgs: dict[str, Any], a: argparse.Namespace, out: Path) -> None:
    from bench_qwen_cpu import hf_generate, steerlib_rollouts

    from steerlib.data import render_prompt, stop_token_ids
    from steerlib.gsm_symbolic import problems
    from steerlib.sampling import shared_prefix_length

    tok = orgs["bfloat16"].tokenizer
    stops, pad = stop_token_ids(tok, "qwen_math"), tok.pad_token_id
    ids = tok([render_prompt(p.question, "qwen_math", tok) for p in problems("test", a.gen_prompts)],
              add_special_tokens=False)["input_ids"]
    m32, m16 = orgs["float32"].model, orgs["bfloat16"].model
    steerlib_rollouts(m16, ids[:2], 2, 8, stops, pad, shared_prefix=True)  # CUDA warm-up, not timed
    hf_generate(m16, ids[:2], 2, 8, stops, pad)
    gen = {"hf_generate_fp32": hf_generate(m32, ids, a.gen_k, a.gen_max_new, stops, pad),
           "hf_generate_bf16": hf_generate(m16, ids, a.gen_k, a.gen_max_new, stops, pad),
           "steerlib_fp32": steerlib_rollouts(m32, ids, a.gen_k, a.gen_max_new, stops, pad),
           "steerlib_bf16_shared": steerlib_rollouts(m16, ids, a.gen_k, a.gen_max_new, stops, pad, shared_prefix=True)}
    ours = gen["steerlib_bf16_shared"]["tokens_per_s"]
    write(out, "generation", {
        "setup": {"prompts": a.gen_prompts, "k": a.gen_k, "max_new_tokens": a.gen_max_new,
                  "shared_prefix_tokens": shared_prefix_length(ids)},
        "generation": gen,
        **{f"steerlib_vs_hf_generate_{d}": ours / gen[f"hf_generate_{d}"]["tokens_per_s"] for d in ("bf16", "fp32")},
    })


PARTS = ("chapter", "accuracy", "generation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--run-dir", default="runs/gpu-qwen2.5-coder-0.5b")
    ap.add_argument("--train-s", type=int, default=180, help="training time box, seconds (0: evaluate the run "
                    "folder's last snapshot)")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=700)
    ap.add_argument("--problems", type=int, default=512, help="held-out problems (one sample each)")
    ap.add_argument("--accuracy", type=int, default=512)
    ap.add_argument("--gen-prompts", type=int, default=32)
    ap.add_argument("--gen-k", type=int, default=8)
    ap.add_argument("--gen-max-new", type=int, default=400)
    ap.add_argument("--deadline-s", type=float, default=1e9, help="skip a part that starts after this many seconds")
    ap.add_argument("--quick", action="store_true", help="tiny sizes on any device (checks the script)")
    a = ap.parse_args()
    if a.quick:
        a.max_steps, a.prompts, a.k, a.max_new, a.problems, a.accuracy = 2, 2, 2, 16, 4, 4
        a.gen_prompts, a.gen_k, a.gen_max_new = 2, 2, 8
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out, "provenance", {**provenance(), "argv": vars(a)})
    from steerlib.presets import load_model, resolve_preset

    orgs: dict[str, Any] = {}  # the accuracy and generation parts share one load per dtype (not the chapter's)

    def both() -> dict[str, Any]:
        for d in ("float32", "bfloat16"):
            if d not in orgs:
                orgs[d] = load_model(resolve_preset("qwen2.5-coder-0.5b", dtype=d))
        return orgs

    for part in a.parts.split(","):
        if time.monotonic() - T0 > a.deadline_s:
            print(f"{part}: skipped (past the {a.deadline_s:.0f} s deadline)", flush=True)
            continue
        print(f"[{time.monotonic() - T0:6.0f} s] {part} ...", flush=True)
        try:
            if part == "chapter":
                chapter(load_model(resolve_preset("qwen2.5-coder-0.5b")), a, out)
            elif part == "accuracy":
                accuracy_part(both(), a, out)
            elif part == "generation":
                generation_part(both(), a, out)
            else:
                raise SystemExit(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
        except Exception:  # noqa: BLE001 - one part's failure must not cost the others
            traceback.print_exc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB", flush=True)


if __name__ == "__main__":
    main()
