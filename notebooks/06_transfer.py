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
# # Moving vectors between models
#
# Vectors trained on one model can be applied to another of the same width. The paper reports
# {cite:p}`sinii2025small` that this works within a family when the donor is the base model (e.g. a
# vector from Qwen2.5-Math-7B helps Qwen2.5-7B-Instruct), turns negative the other way round, and fails
# for Llama base/instruct. Its metric, the normalised gain, is not defined in what we could read; we
# use the most likely definition (PAPER.md §5.7):
# $(acc_{\text{target + donor's vector}} - acc_{\text{target}}) / (acc_{\text{target + own vector}} - acc_{\text{target}})$,
# the share of the target's own steering gain that the donor's vector recovers at the same layer.
#
# On the organism the models are: `main`; `tuned`, a relative of `main` (its weights trained further
# on an answer mix shifted towards direct answers, so it shares `main`'s residual basis, like a base
# model and its instruct version); `sibling`, the same recipe from another random seed; and `llama`,
# the Llama-architecture twin (also trained from scratch). All share the tokenizer and the width. Each
# model gets its own vectors at the chosen layers (a multiplexed sweep, best snapshot on validation).

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
run_dir: str = "runs/organism"  # run directory shared with chapters 01-05 - the donor's sweep is reused
targets: str = "tuned,sibling,llama"  # comma-separated models of the same width - organism names or HF ids
layers: str = "1,5"  # comma-separated layers compared - all: every layer
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # the donor - organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
results_path: str = "book/results/06_transfer.json"  # headline numbers - JSON

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from steerlib import plots
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.sweep import layer_vectors, split_prompts
from steerlib.transfer import transfer_evaluation

common = dict(steps=steps, eval_problems=eval_problems, seed=seed, prompts_per_step=prompts_per_step,
              max_new_tokens=max_new_tokens)
P = resolve_preset(preset, model=model, **common)
TARGETS = [t.strip() for t in targets.split(",") if t.strip()]
if not TARGETS:
    raise ValueError("targets must name at least one model")
LAYERS = list(range(P.n_layers)) if layers.strip() == "all" else sorted({int(x) for x in layers.split(",")})
for l in LAYERS:
    P.check_layer(l)
RUN = Path(run_dir)
DONOR = P.model
presets = {DONOR: P, **{t: resolve_preset(preset, model=t, **common) for t in TARGETS}}
orgs = {name: load_model(p) for name, p in presets.items()}
widths = {name: o.model.config.hidden_size for name, o in orgs.items()}
if len(set(widths.values())) != 1:
    raise ValueError(f"every model must have the donor's width: {widths}")
own = {DONOR: {l: v for l, v in layer_vectors(orgs[DONOR], P, RUN, val_problems=val_problems).items() if l in LAYERS}}
for t in TARGETS:  # each target's own vectors at the same layers
    own[t] = layer_vectors(orgs[t], presets[t], RUN / f"transfer-{t.replace('/', '_')}", layers=LAYERS,
                           val_problems=val_problems)
print({name: {l: round(float(v.vector.norm()), 1) for l, v in vecs.items()} for name, vecs in own.items()})

# %% [markdown]
# ## How similar are the models' own vectors?
# Cosine between two models' own vectors at the same layer. Only models that share a residual basis
# (one descends from the other) can have aligned vectors.

# %%
names = list(own)
cos = {f"layer {l}": [[float(torch.cosine_similarity(own[a][l].vector.float().cpu(), own[b][l].vector.float().cpu(), dim=0))
                       for b in names] for a in names] for l in LAYERS}
fig = plots.heatmaps(cos, f"Cosine between models' own vectors ({P.name})", xlabel="model", ylabel="model",
                     xticks=names, yticks=names, vmin=-1, vmax=1)
fig

# %% [markdown]
# ## Every model's vectors on every other model
# For each target: base, its own vector per layer and every other model's vector per layer, on the
# same held-out problems in one routed batch.

# %%
evals, gains = {}, {}
for target in names:
    prompts, answers = split_prompts(presets[target], orgs[target].tokenizer, "test", presets[target].eval_problems)
    out = transfer_evaluation(orgs[target].model, orgs[target].tokenizer, prompts, answers, own[target],
                              {d: own[d] for d in names if d != target}, max_new_tokens=presets[target].max_new_tokens)
    evals[target] = out["results"]
    for donor, per_layer in out["normalized_gain"].items():
        gains[f"{donor}->{target}"] = per_layer
rows = []
for target, res in evals.items():
    for key, r in res.items():
        rows.append({"target": target, "vector": key, "pass@1": r.pass_at_1, "stderr": r.stderr})
table = pd.DataFrame(rows).pivot(index="vector", columns="target", values="pass@1")
table

# %%
grids = {f"layer {l}": [[gains[f"{d}->{t}"][l] if d != t else float("nan") for t in names] for d in names]
         for l in LAYERS}
fig = plots.heatmaps(grids, f"Normalised gain of transferred vectors ({P.name}; rows: donor, columns: target)",
                     xlabel="target", ylabel="donor", xticks=names, yticks=names, vmin=-1, vmax=1)
glue("fig_transfer", fig, display=False)
fig

# %%
from steerlib.organism import ORGANISMS

parent = {x: ORGANISMS[x].parent if x in ORGANISMS else None for x in names}  # organism presets only
pair_mean = {pair: float(np.nanmean(list(g.values()))) for pair, g in gains.items()}
down = {p for p in pair_mean if parent[p.split("->")[1]] == p.split("->")[0]}  # parent -> its tuned model
up = {p for p in pair_mean if parent[p.split("->")[0]] == p.split("->")[1]}  # tuned model -> its parent
from_parent, from_child = [pair_mean[p] for p in down], [pair_mean[p] for p in up]
fam = from_parent + from_child
other = [v for p, v in pair_mean.items() if p not in down | up]
results = {
    "preset": P.name,
    "donor": DONOR,
    "targets": TARGETS,
    "layers": LAYERS,
    "normalized_gain": {pair: {str(l): v for l, v in g.items()} for pair, g in gains.items()},
    "mean_normalized_gain": pair_mean,
    "base_pass_at_1": {t: evals[t]["base"].pass_at_1 for t in names},
    "own_pass_at_1": {t: {str(l): evals[t][f"own/{l}"].pass_at_1 for l in LAYERS} for t in names},
    "own_vector_cosine": {k: v for k, v in cos.items()},
    "related_mean_gain": float(np.mean(fam)) if fam else None,
    "parent_to_child_mean_gain": float(np.mean(from_parent)) if from_parent else None,
    "child_to_parent_mean_gain": float(np.mean(from_child)) if from_child else None,
    "unrelated_mean_gain": float(np.mean(other)) if other else None,
}
results = json.loads(json.dumps(results).replace("NaN", "null"))
write_results(results_path, results)
for key, value in {"related_gain": results["related_mean_gain"] if fam else float("nan"),
                   "unrelated_gain": results["unrelated_mean_gain"] if other else float("nan"),
                   "n_related": len(fam), "n_unrelated": len(other),
                   "parent_gain": float(np.mean(from_parent)) if from_parent else float("nan"),
                   "child_gain": float(np.mean(from_child)) if from_child else float("nan"),
                   "best_pair": max(pair_mean, key=pair_mean.get), "best_pair_gain": max(pair_mean.values()),
                   "worst_pair": min(pair_mean, key=pair_mean.get), "worst_pair_gain": min(pair_mean.values())}.items():
    glue(key, value, display=False)
print(json.dumps(results["mean_normalized_gain"], indent=1))

# %% [markdown]
# ## What we found
#
# Averaged over the compared layers, the normalised gain between related models (one trained from the
# other; {glue:text}`n_related` directions) is {glue:text}`related_gain:.2f`: from the parent to the
# tuned model {glue:text}`parent_gain:.2f`, from the tuned model back to its parent
# {glue:text}`child_gain:.2f`. Between unrelated models ({glue:text}`n_unrelated` directions) it is
# {glue:text}`unrelated_gain:.2f`. The best direction is
# {glue:text}`best_pair` ({glue:text}`best_pair_gain:.2f`), the worst {glue:text}`worst_pair`
# ({glue:text}`worst_pair_gain:.2f`).
#
# | | paper | this run (organism) |
# | --- | --- | --- |
# | within a family, donor = base model | works | parent -> tuned model, above |
# | within a family, donor = tuned model | negative for Qwen2.5-7B-Instruct -> Qwen2.5-Math-7B | tuned model -> parent, above |
# | Llama base <-> instruct | fails (blamed on chat templates) | no analogue: the organism's Llama twin is unrelated |
# | unrelated models | not tested | sibling and llama, above |
