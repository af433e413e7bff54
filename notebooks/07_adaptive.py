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
# # Adaptive steering and the vector's magnitude
#
# A steering vector adds the same thing at every token. The paper's adaptive variant
# {cite:p}`sinii2025small` lets the size vary per token: a rank-1 LoRA on one layer's `down_proj`
# adds $c_t \cdot B$ after the layer, where $B$ is a fixed direction and
# $c_t = \text{scaling} \cdot (A \cdot m_t)$ is computed from the MLP's hidden activation $m_t$ at
# token $t$ (PAPER.md §5.9). It is trained with the same RLOO recipe, one layer at a time. The paper
# reports that the magnitude concentrates on meaningful prompt segments; accuracies were not found.
# The authors' unpublished "magnitude" experiment rescales a trained vector by factors from −1 to 10
# (PAPER.md §9f); we run it on two layers.
#
# Magnitudes are $|c_t| \cdot |B|$ divided by the mean norm of the layer's output (as the authors
# normalise by the mean hidden norm), on completions sampled with the adapter. Prompt tokens are
# labelled by segment: template text before the problem, the problem itself, template text after it.

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
run_dir: str = "runs/organism"  # run directory shared with chapters 01-06 - sweep vectors are reused
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
adaptive_layers: str = "all"  # comma-separated layers for the rank-1 LoRA - all: every layer
adaptive_lr: Optional[float] = None  # learning rate of the rank-1 LoRA - None: the preset's LoRA lr
magnitude_layers: str = "2,5"  # comma-separated layers whose vector is rescaled
factors: str = "-1,-0.5,0,0.1,0.5,0.75,0.9,0.95,0.98,1,1.05,1.1,1.2,1.5,2,3,4,5,7,10"  # rescaling factors
magnitude_prompts: int = 64  # prompts for the per-token magnitudes
results_path: str = "book/results/07_adaptive.json"  # headline numbers - JSON

# %%
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from steerlib import plots
from steerlib.adaptive import direction, segment_labels, segment_means, token_magnitudes
from steerlib.evaluate import evaluate_routed, generate
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.sweep import evaluate_weights, layer_vectors, split_problems, split_prompts, train_weights
from steerlib.traces import encode_pairs

P = resolve_preset(preset, steps=steps, model=model, eval_problems=eval_problems, seed=seed,
                   prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens)
parse = lambda text: list(range(P.n_layers)) if text.strip() == "all" else sorted({int(x) for x in text.split(",")})  # noqa: E731
ADAPT, MAG = parse(adaptive_layers), parse(magnitude_layers)
FACTORS = [float(x) for x in factors.split(",")]
for l in ADAPT + MAG:
    P.check_layer(l)
if magnitude_prompts < 1 or not FACTORS:
    raise ValueError("magnitude_prompts must be >= 1 and factors non-empty")
RUN = Path(run_dir)
org = load_model(P)
tok = org.tokenizer
vecs = layer_vectors(org, P, RUN, val_problems=val_problems)  # chapter 02's sweep (trained if missing)
print(f"preset {P.name}: rank-1 LoRA at layers {ADAPT}, magnitude sweep at layers {MAG}")

# %% [markdown]
# ## Training a rank-1 LoRA per layer
# Each run starts from PEFT's initialisation ($B = 0$, so the adapter starts as the identity), its best
# snapshot is chosen on the validation split, and it is evaluated on the held-out problems. Full
# fine-tuning (chapter 02's run) is evaluated the same way.

# %%
adaptive, adaptive_steps = {}, {}
for l in ADAPT:
    res = train_weights(org, P, "lora", RUN / f"adaptive-{l}", layers=[l], rank=1, lr=adaptive_lr)
    val = evaluate_weights(org, P, res, split="validation", n_problems=val_problems)
    step = max(val, key=lambda s: val[s].pass_at_1)
    adaptive_steps[l] = step
    adaptive[l] = (res, evaluate_weights(org, P, res, step=step)[step])  # leaves the best snapshot loaded
full = train_weights(org, P, "full", RUN / "full-ft")
full_val = evaluate_weights(org, P, full, split="validation", n_problems=val_problems)
full_step = max(full_val, key=lambda s: full_val[s].pass_at_1)
full_eval = evaluate_weights(org, P, full, step=full_step)[full_step]
prompts, answers = split_prompts(P, tok, "test", P.eval_problems)
vec_eval = evaluate_routed(org.model, tok, prompts, answers, {"base": [], **{str(l): [vecs[l]] for l in ADAPT}},
                           max_new_tokens=P.max_new_tokens)
fig = plots.layer_curve({l: adaptive[l][1].pass_at_1 for l in ADAPT}, {l: adaptive[l][1].stderr for l in ADAPT},
                        {"base": vec_eval["base"].pass_at_1, "full fine-tune": full_eval.pass_at_1},
                        title=f"Adaptive (rank-1 LoRA) vs plain vector per layer ({P.name})",
                        label="rank-1 LoRA (adaptive)",
                        others={"plain vector": ({l: vec_eval[str(l)].pass_at_1 for l in ADAPT},
                                                 {l: vec_eval[str(l)].stderr for l in ADAPT})})
glue("fig_adaptive", fig, display=False)
fig

# %%
per_layer = pd.DataFrame([{"layer": l, "rank-1 LoRA": adaptive[l][1].pass_at_1, "plain vector": vec_eval[str(l)].pass_at_1,
                           "cos(B, s)": float(torch.cosine_similarity(direction(adaptive[l][0].trainable, l),
                                                                     vecs[l].vector.float().cpu(), dim=0)),
                           "|B|": float(direction(adaptive[l][0].trainable, l).norm()), "|s|": float(vecs[l].vector.norm()),
                           "best step": adaptive_steps[l]} for l in ADAPT]).set_index("layer")
per_layer

# %% [markdown]
# ## Where the adapter puts its magnitude
# Mean normalised magnitude per segment and layer, on completions sampled with each layer's adapter.

# %%
problems = split_problems(P, "test", magnitude_prompts)
mag_prompts = prompts[:magnitude_prompts]
seg_table, examples = {}, {}
for l in ADAPT:
    tr = adaptive[l][0].trainable
    comps = generate(tr.model, tok, mag_prompts, max_new_tokens=P.max_new_tokens, seed=seed)
    forced = encode_pairs(tok, mag_prompts, [c.token_ids for c in comps])
    mags = token_magnitudes(tr, forced, l)
    labels = [segment_labels(tok, p, pr.problem, len(c.token_ids)) for p, pr, c in zip(mag_prompts, problems, comps)]
    seg_table[l] = segment_means(mags, labels)
    examples[l] = (forced, mags[0])
segments = ["before problem", "problem", "after problem", "generated"]
seg = pd.DataFrame([{"layer": l, **{s: seg_table[l].get(s, float("nan")) for s in segments}} for l in ADAPT]).set_index("layer")
fig = plots.heatmaps({"mean |c_t|·|B| / mean |h|": seg.to_numpy()}, f"Adaptive magnitude by segment ({P.name})",
                     xlabel="segment", ylabel="layer", xticks=segments, yticks=ADAPT, cmap="rocket_r", fmt=".3f")
glue("fig_segments", fig, display=False)
fig

# %%
best_adapt = max(ADAPT, key=lambda l: adaptive[l][1].pass_at_1)
forced, mag = examples[best_adapt]
ids = forced.ids[0][forced.mask[0].bool()].tolist()
fig = plots.bars({f"{i}:{tok.decode([t])!r}": float(m) for i, (t, m) in enumerate(zip(ids, mag))},
                 f"Per-token magnitude, layer {best_adapt} adapter, one example ({P.name})",
                 ylabel="|c_t|·|B| / mean |h|", ylim=None, rotate=True)
fig

# %% [markdown]
# ## Rescaling a trained vector
# Each chosen layer's vector multiplied by every factor, all evaluated on the same held-out problems in
# one routed batch (factor 0 is the base model, 1 the trained vector).

# %%
mag_configs = {f"{l} x{f:g}": [replace(vecs[l], scale=f)] for l in MAG for f in FACTORS}
mag_eval = evaluate_routed(org.model, tok, prompts, answers, mag_configs, max_new_tokens=P.max_new_tokens)
curve = {str(l): {f"{f:g}": mag_eval[f"{l} x{f:g}"].pass_at_1 for f in FACTORS} for l in MAG}
fig = plots.curves(FACTORS, {f"layer {l}": [curve[str(l)][f"{f:g}"] for f in FACTORS] for l in MAG},
                   f"pass@1 against the vector's scale ({P.name})", xlabel="factor on the trained vector (symlog)",
                   ylabel="pass@1 (τ = 1, held-out)", lines={"base": vec_eval["base"].pass_at_1}, symlog=True)
glue("fig_magnitude", fig, display=False)
fig

# %%
best_factor = {str(l): max(FACTORS, key=lambda f: curve[str(l)][f"{f:g}"]) for l in MAG}
results = {
    "preset": P.name,
    "per_layer_adaptive": {str(l): adaptive[l][1].pass_at_1 for l in ADAPT},
    "per_layer_adaptive_stderr": {str(l): adaptive[l][1].stderr for l in ADAPT},
    "per_layer_vector": {str(l): vec_eval[str(l)].pass_at_1 for l in ADAPT},
    "base_pass_at_1": vec_eval["base"].pass_at_1,
    "full_ft_pass_at_1": full_eval.pass_at_1,
    "cos_lora_direction_vector": per_layer["cos(B, s)"].to_dict(),
    "segment_magnitude": {str(l): seg_table[l] for l in ADAPT},
    "magnitude_curve": curve,
    "best_factor": best_factor,
    "adaptive_best_steps": {str(l): s for l, s in adaptive_steps.items()},
}
results = json.loads(json.dumps(results, default=float))
write_results(results_path, results)
diffs = [adaptive[l][1].pass_at_1 - vec_eval[str(l)].pass_at_1 for l in ADAPT]
mean_seg = {s: float(np.nanmean(seg[s])) for s in segments}
top_seg = max(mean_seg, key=mean_seg.get)
for key, value in {"n_adapt": len(ADAPT), "n_better": sum(d > 0 for d in diffs), "mean_diff": float(np.mean(diffs)),
                   "best_adapt": best_adapt, "best_adapt_acc": adaptive[best_adapt][1].pass_at_1,
                   "full_acc": full_eval.pass_at_1, "base_acc": vec_eval["base"].pass_at_1,
                   "mean_abs_cos": float(per_layer["cos(B, s)"].abs().mean()),
                   "top_segment": top_seg, "top_segment_mag": mean_seg[top_seg],
                   "gen_mag": mean_seg["generated"], "problem_mag": mean_seg["problem"],
                   "mag_summary": "; ".join(f"layer {l}: best factor {best_factor[str(l)]:g} ({curve[str(l)][f'{best_factor[str(l)]:g}']:.3f}), "
                                            f"x1 {curve[str(l)]['1']:.3f}, x-1 {curve[str(l)]['-1']:.3f}, x10 {curve[str(l)]['10']:.3f}"
                                            for l in MAG if all(f"{f:g}" in curve[str(l)] for f in (1, -1, 10)))}.items():
    glue(key, value, display=False)
print(json.dumps({k: v for k, v in results.items() if k != "segment_magnitude"}, indent=1))

# %% [markdown]
# ## What we found
#
# The rank-1 LoRA beats the plain vector of the same layer at {glue:text}`n_better` of
# {glue:text}`n_adapt` layers (mean difference {glue:text}`mean_diff:.3f`); its best layer is
# {glue:text}`best_adapt` ({glue:text}`best_adapt_acc:.3f`; base {glue:text}`base_acc:.3f`, full
# fine-tuning {glue:text}`full_acc:.3f`). Its direction $B$ has a mean absolute cosine of
# {glue:text}`mean_abs_cos:.2f` with the plain vector of the same layer. Averaged over layers the
# magnitude is largest on the segment "{glue:text}`top_segment`" ({glue:text}`top_segment_mag:.3f`;
# problem tokens {glue:text}`problem_mag:.3f`, generated tokens {glue:text}`gen_mag:.3f`).
# Rescaling: {glue:text}`mag_summary`.
#
# | | paper | this run (organism) |
# | --- | --- | --- |
# | adaptive (rank-1 LoRA) accuracy | not found | per layer above |
# | magnitude concentrates on | meaningful prompt segments | the segment above |
# | rescaling a vector (−1 ... 10) | not published | the curve above |
