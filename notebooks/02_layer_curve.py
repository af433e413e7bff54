# ---
# jupyter:
#   jupytext:
#     formats: notebooks///py:percent,book/chapters///ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A vector per layer: the layer curve
#
# The paper's Figure 1 trains one vector at each layer alone and plots mean accuracy against the
# layer, next to the base model and full RL fine-tuning {cite:p}`sinii2025small`; "all but two layers"
# improve on the base model, and the two that fail in Qwen2.5-Math-7B (layers 23 and 24) are blamed on
# the next block's input norm shrinking the vector. The precursor paper {cite:p}`sinii2025steering`
# trained a vector at every layer at once (all-layer steering) and compared it with LoRA and full
# fine-tuning. This chapter does all of that on one preset.
#
# The sweep is *multiplexed*: in each RLOO step every layer's vector sees the same prompts (a paired
# comparison across layers), each prompt group is routed to one layer's vector, and advantages, token
# normalisation, gradient clipping and Adam state never mix layers, so each vector gets exactly the
# update a single-layer run would make from the same samples (a unit test checks this). Best snapshots
# are chosen on a validation split disjoint from the test problems.

# %% tags=["remove-cell"]
import sys
from typing import Optional

if "google.colab" in sys.modules:  # Colab only: install steerlib, keep Colab's own torch
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "steerlib[book] @ git+https://github.com/steerlib/small-vectors-book"], check=True)

# %% tags=["parameters"]
preset: str = "organism"  # organism | qwen2.5-math-1.5b | qwen2.5-math-7b | llama3.1-8b-instruct
seed: int = 0  # seeds sampling and prompt order
run_dir: str = "runs/organism"  # where runs, vectors and evaluations are kept - resumed if present
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing the best snapshot
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
sweep_mode: str = "auto"  # auto | multiplexed | sequential - auto: multiplexed when all layers share one lr
baselines: bool = True  # also train all-layer steering, LoRA and full fine-tuning
results_path: str = "book/results/02_layer_curve.json"  # headline numbers - JSON

# %%
import json
from pathlib import Path

import pandas as pd
from myst_nb import glue

from steerlib import plots
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.sweep import (
    evaluate_vector_files, evaluate_weights, layer_vectors, select_best, train_vectors, train_weights,
)

if sweep_mode not in ("auto", "multiplexed", "sequential"):
    raise ValueError(f"sweep_mode must be auto, multiplexed or sequential, not {sweep_mode!r}")
P = resolve_preset(preset, steps=steps, model=model, eval_problems=eval_problems, seed=seed,
                   prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens)
RUN = Path(run_dir)
LAYERS = list(range(P.n_layers))
mode = sweep_mode
if mode == "auto":
    mode = "multiplexed" if len({P.lr_for(l) for l in LAYERS}) == 1 else "sequential"
org = load_model(P)
print(f"preset {P.name}: {P.n_layers} layers, sweep {mode}, {P.steps} steps per run")

# %% [markdown]
# ## The sweep

# %%
vectors = layer_vectors(org, P, RUN, mode=mode, val_problems=val_problems)  # trains or resumes the sweep
chosen = json.loads((RUN / "sweep-best.json").read_text())["layers"]  # the best snapshot of every layer
if mode == "multiplexed":
    sweep = train_vectors(org, P, LAYERS, RUN / "sweep-multiplexed", mode="multiplexed")  # done: its record
    sweep_seconds, sweep_median = sweep.train_seconds, sweep.median_step_seconds
    fig = plots.training_curves(sweep.metrics, f"Multiplexed sweep over {P.n_layers} layers ({P.name})")
else:
    runs = [train_vectors(org, P, [layer], RUN / f"single-layer-{layer}") for layer in LAYERS]
    sweep_seconds = sum(r.train_seconds for r in runs)
    sweep_median = sum(r.median_step_seconds for r in runs)
    fig = plots.training_curves(runs[-1].metrics, f"Last layer's run of the sequential sweep ({P.name})")
fig

# %% [markdown]
# One single-layer run of the same length, for the timing comparison (the multiplexed sweep should
# take no longer than `n_layers` of these). It is chapter 01's run when the run directory has it. The
# ratio uses median seconds per step, which a transient load on the machine does not distort; the
# totals are reported too.

# %%
single = train_vectors(org, P, [P.n_layers - 1], RUN / f"single-layer-{P.n_layers - 1}")
single_layer_seconds = single.train_seconds
sweep_ratio = sweep_median / (P.n_layers * single.median_step_seconds)
print(f"sweep {sweep_seconds:.0f} s for {P.n_layers} layers; one single-layer run {single_layer_seconds:.0f} s; "
      f"median step {sweep_median:.2f} s vs {single.median_step_seconds:.2f} s: the sweep costs "
      f"{sweep_ratio:.2f} x n_layers single-layer runs")

# %% [markdown]
# ## Baselines: all-layer steering, LoRA, full fine-tuning

# %%
if baselines:
    all_layer = train_vectors(org, P, LAYERS, RUN / "all-layer", mode="all_layer")
    lora = train_weights(org, P, "lora", RUN / "lora")
    full = train_weights(org, P, "full", RUN / "full-ft")

# %% [markdown]
# ## Held-out pass@1
# Snapshots are chosen on the validation split (every layer's in one routed batch; all-layer steering
# in another), then every chosen vector and the base model are evaluated on the test split in one
# routed batch.

# %%
best = {f"layer {l}": (c["step"], c["validation_pass_at_1"]) for l, c in chosen.items()}
files = {f"layer {l}": RUN / c["file"] for l, c in chosen.items()}
if baselines:
    best.update(select_best(org, P, {"all layers": all_layer.snapshots}, n_problems=val_problems))
    files["all layers"] = all_layer.snapshots[best["all layers"][0]]
evals = evaluate_vector_files(org, P, files)
weight_evals = {}
if baselines:
    for name, res in (("LoRA", lora), ("full fine-tune", full)):
        val = evaluate_weights(org, P, res, split="validation", n_problems=val_problems)
        step = max(val, key=lambda s: val[s].pass_at_1)
        weight_evals[name] = (step, evaluate_weights(org, P, res, step=step)[step])
rows = []
for name, res in evals.items():
    rows.append({"run": name, "pass@1": res.pass_at_1, "stderr": res.stderr,
                 "best step": best.get(name, (None,))[0]})
for name, (step, res) in weight_evals.items():
    rows.append({"run": name, "pass@1": res.pass_at_1, "stderr": res.stderr, "best step": step})
table = pd.DataFrame(rows).set_index("run")
table

# %%
per_layer = {l: evals[f"layer {l}"].pass_at_1 for l in LAYERS}
errors = {l: evals[f"layer {l}"].stderr for l in LAYERS}
lines = {"base": evals["base"].pass_at_1}
if baselines:
    lines.update({"all-layer steering": evals["all layers"].pass_at_1,
                  "LoRA": weight_evals["LoRA"][1].pass_at_1,
                  "full fine-tune": weight_evals["full fine-tune"][1].pass_at_1})
fig = plots.layer_curve(per_layer, errors, lines, title=f"Single-layer steering vectors ({P.name})")
glue("fig_layer_curve", fig, display=False)
fig

# %%
results = {
    "preset": P.name,
    "n_layers": P.n_layers,
    "per_layer": {str(l): v for l, v in per_layer.items()},
    "per_layer_stderr": {str(l): v for l, v in errors.items()},
    "base_pass_at_1": evals["base"].pass_at_1,
    "all_layer_pass_at_1": lines.get("all-layer steering"),
    "lora_pass_at_1": lines.get("LoRA"),
    "full_ft_pass_at_1": lines.get("full fine-tune"),
    "sweep_mode": mode,
    "sweep_seconds": sweep_seconds,
    "single_layer_seconds": single_layer_seconds,
    "sweep_median_step_seconds": sweep_median,
    "single_layer_median_step_seconds": single.median_step_seconds,
    "sweep_vs_n_single": sweep_ratio,
    "best_steps": {k: v[0] for k, v in best.items()},
    "steps": P.steps,
}
write_results(results_path, results)
best_layer = max(per_layer, key=per_layer.get)
worst_layer = min(per_layer, key=per_layer.get)
helped = sum(v > results["base_pass_at_1"] + 2 * errors[l] for l, v in per_layer.items())
for key, value in {"best_layer": best_layer, "worst_layer": worst_layer, "best_layer_acc": per_layer[best_layer],
                   "worst_layer_acc": per_layer[worst_layer], "n_helped": helped, "n_layers": P.n_layers,
                   "base_acc": results["base_pass_at_1"], "sweep_ratio": results["sweep_vs_n_single"],
                   **{k: results[k] for k in ("all_layer_pass_at_1", "lora_pass_at_1", "full_ft_pass_at_1")
                      if results[k] is not None}}.items():
    glue(key, value, display=False)
print(json.dumps(results, indent=1))

# %% [markdown]
# ## What we found
#
# {glue:text}`n_helped` of {glue:text}`n_layers` single-layer vectors beat the base model
# ({glue:text}`base_acc:.3f`) by more than two standard errors. The best is layer
# {glue:text}`best_layer` ({glue:text}`best_layer_acc:.3f`), the weakest layer
# {glue:text}`worst_layer` ({glue:text}`worst_layer_acc:.3f`). All-layer steering reached
# {glue:text}`all_layer_pass_at_1:.3f`, LoRA {glue:text}`lora_pass_at_1:.3f` and full fine-tuning
# {glue:text}`full_ft_pass_at_1:.3f`. The multiplexed sweep cost {glue:text}`sweep_ratio:.2f` x
# (`n_layers` x the last layer's single-layer run). That reference is the cheapest layer to train (its
# backward pass covers one block), so the ratio overstates the sweep's cost;
# `benchmarks/bench_sweep.py` times one single-layer run per layer against the sweep at equal work.
#
# | | paper (Qwen2.5-Math-7B) | this run (organism) |
# | --- | --- | --- |
# | single-layer vectors help | all but 2 of 28 layers | the count above |
# | where the gain is largest | late layers (last, penultimate) | the best layer above |
# | layers that fail | 23, 24 (next norm shrinks the vector) | see chapter 05's norm attenuation |
# | all-layer steering vs full fine-tune | close ("explains a large portion") | the numbers above |
