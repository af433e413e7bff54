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
# # Persistence: does a vector become the later layers' vectors?
#
# A vector added after layer $i$ travels up the residual stream. Does it turn into the vector that RL
# would have trained at a later layer $j$, so that all layers implement one direction carried
# downstream? The paper answers no {cite:p}`sinii2025small`: the shift that $s_i$ causes at layer $j$
# stays aligned with itself across tokens (Diff-Diff cosine clearly above zero) but is nearly orthogonal
# to $s_j$ (Diff-Vector cosine falls quickly with distance), so layers implement distinct mechanisms.
# It also reports that vectors retrained orthogonal to the original never match it, and that vectors
# trained in isolation can be combined, constructively in Qwen, often harmfully in Llama.
#
# Definitions are the authors' (PAPER.md §5.2, §5.8). For a prompt, one completion is sampled with
# only $s_i$ active; prompt + completion is teacher-forced with and without $s_i$, and every decoder
# layer's output recorded: $\Delta_j(t) = h_j(t; s_i) - h_j(t; \text{base})$ at every token.
# **Diff-Vector** $= \cos(\Delta_j(t), s_j)$, **Diff-Diff** $= \cos(\Delta_j(t), \overline{\Delta_j})$
# with $\overline{\Delta_j}$ the mean over the sequence's tokens; each averaged over tokens, then prompts.
# Pairs: **normalised pair accuracy** $= (acc_{ij} - \max(acc_i, acc_j)) / (acc_{all} - \max(acc_i, acc_j))$,
# 0 = no better than the better vector alone, 1 = as good as all-layer steering.

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
run_dir: str = "runs/organism"  # run directory shared with chapters 01-02 - sweep vectors are reused
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
persistence_prompts: int = 64  # prompts for the propagated shifts
orthogonal_layer: Optional[int] = None  # layer of the orthogonal-vector test - None: the last layer
n_orthogonal: int = 2  # orthogonal vectors trained one after another
results_path: str = "book/results/03_persistence.json"  # headline numbers - JSON

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from steerlib import plots
from steerlib.evaluate import evaluate_routed
from steerlib.lens import top_tokens
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.propagation import evaluate_pairs, pair_configs, pair_grid, persistence
from steerlib.sweep import layer_vectors, select_best, split_prompts, train_vectors
from steerlib.vectorfile import load_vectors

if persistence_prompts < 1 or n_orthogonal < 1:
    raise ValueError("persistence_prompts and n_orthogonal must be >= 1")
P = resolve_preset(preset, steps=steps, model=model, eval_problems=eval_problems, seed=seed,
                   prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens)
ORTH = P.n_layers - 1 if orthogonal_layer is None else orthogonal_layer
P.check_layer(ORTH)
RUN = Path(run_dir)
LAYERS = list(range(P.n_layers))
org = load_model(P)
tok = org.tokenizer
vecs = layer_vectors(org, P, RUN, val_problems=val_problems)  # chapter 02's sweep (trained if missing)
print(f"preset {P.name}: {P.n_layers} layers; |s_l| =", {l: round(float(v.vector.norm()), 2) for l, v in vecs.items()})

# %% [markdown]
# ## Propagated shifts
# Rows: the layer $i$ where the vector is injected; columns: the layer $j$ whose output is read.
# Below the diagonal the shift is exactly zero (left blank); on the diagonal $\Delta_i = s_i$, so both
# cosines are 1 by construction.

# %%
prompts, _ = split_prompts(P, tok, "test", persistence_prompts)
pers = persistence(org.model, tok, prompts, vecs, max_new_tokens=P.max_new_tokens, seed=seed)
fig = plots.heatmaps({"Diff-Vector CosSim  cos(Δ_j, s_j)": pers.diff_vector,
                      "Diff-Diff CosSim  cos(Δ_j, mean Δ_j)": pers.diff_diff},
                     f"Persistence of single-layer vectors ({P.name})", xlabel="read-out layer j",
                     ylabel="injection layer i", vmin=-1, vmax=1)
glue("fig_persistence", fig, display=False)
fig

# %%
off = [r for r in pers.by_distance() if r["j"] > r["i"]]
fig = plots.scatter(off, "distance", {"diff_vector": "Diff-Vector", "diff_diff": "Diff-Diff"},
                    "Cosines against layer distance (j > i)", xlabel="normalised distance (j − i) / (L − 1)",
                    ylabel="mean cosine")
fig

# %% [markdown]
# The size of the propagated shift relative to the injected vector (mean $|\Delta_j(t)|$ / $|s_i|$):
# does the vector's push grow, persist or fade on the way up?

# %%
growth = pd.DataFrame(pers.delta_norm / np.array([float(vecs[i].vector.norm()) for i in LAYERS])[:, None],
                      index=pd.Index(LAYERS, name="injection layer i"),
                      columns=pd.Index(LAYERS, name="read-out layer j")).round(2)
growth

# %% [markdown]
# The last layer's mean shift for each injection layer, read through the unembedding (top and bottom
# tokens by cosine with $W_U$ rows, as the authors' script ranks them).

# %%
rows = []
for i in LAYERS:
    shift = pers.final_shift[i]
    rows.append({"injection layer": i,
                 "top (cosine)": ", ".join(f"{t!r} {c:.2f}" for t, c in top_tokens(org.model, tok, shift, k=4, ranking="cossim")),
                 "bottom (cosine)": ", ".join(f"{t!r} {c:.2f}" for t, c in top_tokens(org.model, tok, shift, k=4, ranking="cossim", bottom=True))})
final_lens = pd.DataFrame(rows).set_index("injection layer")
final_lens

# %% [markdown]
# ## Orthogonal vectors
# A vector is retrained at the same layer with the same recipe, constrained to stay orthogonal to the
# original (its component along the original is removed in every forward pass); a second one is then
# trained orthogonal to both. Each run's best snapshot is chosen on the validation split; all are
# evaluated with the original on the same held-out problems.

# %%
basis = [vecs[ORTH].vector.detach()]
orth_vectors = {}
for k in range(1, n_orthogonal + 1):
    r = train_vectors(org, P, [ORTH], RUN / f"orthogonal-{ORTH}-{k}", orthogonal_to=torch.stack(basis))
    step, _ = select_best(org, P, {"o": r.snapshots}, n_problems=val_problems)["o"]
    orth_vectors[f"orthogonal {k}"] = load_vectors(r.snapshots[step], org.model).vectors[0]
    basis.append(orth_vectors[f"orthogonal {k}"].vector.detach())
test_prompts, test_answers = split_prompts(P, tok, "test", P.eval_problems)
orth_eval = evaluate_routed(org.model, tok, test_prompts, test_answers,
                            {"base": [], "original": [vecs[ORTH]], **{k: [v] for k, v in orth_vectors.items()}},
                            max_new_tokens=P.max_new_tokens)
orig = vecs[ORTH].vector.detach()
orth_table = pd.DataFrame([{"vector": k, "pass@1": r.pass_at_1, "stderr": r.stderr,
                            "|s|": float(orig.norm()) if k == "original" else (float(orth_vectors[k].vector.norm()) if k in orth_vectors else 0.0),
                            "cos with original": 1.0 if k == "original" else (float(torch.cosine_similarity(orth_vectors[k].vector, orig, dim=0)) if k in orth_vectors else float("nan")),
                            "top first tokens": ", ".join(f"{t!r} {s:.2f}" for t, s in r.top_first_tokens(3))}
                           for k, r in orth_eval.items()]).set_index("vector")
orth_table

# %%
fig = plots.bars({k: r.pass_at_1 for k, r in orth_eval.items()}, f"Orthogonal vectors at layer {ORTH} ({P.name})",
                 ylabel="pass@1 (τ = 1, held-out)", errors={k: r.stderr for k, r in orth_eval.items()})
fig

# %% [markdown]
# ## Combining vectors trained in isolation
# Every pair of single-layer vectors applied together, with every single vector, all-layer steering
# (chapter 02's run, its best snapshot chosen on validation) and the base model, on the same held-out
# problems in one routed batch. As a diagnostic of our own (not in the paper), every pair is also
# applied at half strength, $(s_i + s_j)/2$: if two vectors push along much the same direction, their
# sum overshoots and their mean should not.

# %%
all_layer = train_vectors(org, P, LAYERS, RUN / "all-layer", mode="all_layer")
step_all, _ = select_best(org, P, {"all": all_layer.snapshots}, n_problems=val_problems)["all"]
all_vecs = load_vectors(all_layer.snapshots[step_all], org.model).vectors
pairs = evaluate_pairs(org.model, tok, test_prompts, test_answers, vecs,
                       extra={"all layers": all_vecs, **pair_configs(vecs, scale=0.5, tag=" half", singles=False)},
                       max_new_tokens=P.max_new_tokens)
acc_all = pairs["all layers"].pass_at_1
grid = pair_grid(pairs, LAYERS, acc_all)
half = [[pairs[f"{min(i, j)}+{max(i, j)} half"].pass_at_1 if i != j else pairs[str(i)].pass_at_1 for j in LAYERS]
        for i in LAYERS]
fig = plots.heatmaps({"pass@1, s_i + s_j (diagonal: s_i)": grid["accuracy"],
                      "pass@1, (s_i + s_j) / 2": half,
                      "normalised pair accuracy (colours clipped at −2)": grid["normalized"]},
                     f"Pairs of single-layer vectors ({P.name}; base {pairs['base'].pass_at_1:.3f}, "
                     f"all-layer {acc_all:.3f})", xlabel="layer", ylabel="layer", cmap="vlag", vmin=-2, vmax=1)
glue("fig_pairs", fig, display=False)
fig

# %%
pair_rows = [{"i": i, "j": j, "normalized": grid["normalized"][i][j], "distance": (j - i) / max(1, P.n_layers - 1),
              "half": half[i][j], "sum": grid["accuracy"][i][j], "best_single": max(grid["accuracy"][i][i], grid["accuracy"][j][j]),
              "diff_diff": float(pers.diff_diff[i, j]), "diff_vector": float(pers.diff_vector[i, j])}
             for i in LAYERS for j in LAYERS if j > i]
fig = plots.scatter(pair_rows, "diff_vector", {"sum": "s_i + s_j", "half": "(s_i + s_j) / 2",
                                                 "best_single": "better single vector"},
                    "Pair accuracy against Diff-Vector CosSim(i, j)", xlabel="Diff-Vector CosSim(i, j)",
                    ylabel="pass@1 (τ = 1, held-out)")
fig

# %%
norm_vals = np.array([r["normalized"] for r in pair_rows], dtype=float)
ok = ~np.isnan(norm_vals)
corr = {k: float(np.corrcoef(norm_vals[ok], np.array([r[k] for r in pair_rows])[ok])[0, 1]) if ok.sum() > 2 else float("nan")
        for k in ("distance", "diff_diff", "diff_vector")}
beyond = [(i, j) for i in LAYERS for j in LAYERS if j > i
          and pairs[f"{i}+{j}"].pass_at_1 > max(pairs[str(i)].pass_at_1, pairs[str(j)].pass_at_1)
          + 2 * max(pairs[f"{i}+{j}"].stderr, 1e-9)]
harmful = [(i, j) for i in LAYERS for j in LAYERS if j > i
           and pairs[f"{i}+{j}"].pass_at_1 < max(pairs[str(i)].pass_at_1, pairs[str(j)].pass_at_1)
           - 2 * max(pairs[f"{i}+{j}"].stderr, 1e-9)]
mask = ~np.eye(P.n_layers, dtype=bool) & ~np.isnan(pers.diff_vector)
upper = np.triu(np.ones((P.n_layers, P.n_layers), dtype=bool), 1)
results = {
    "preset": P.name,
    "n_layers": P.n_layers,
    "persistence_prompts": persistence_prompts,
    "diff_vector": pers.diff_vector.tolist(),
    "diff_diff": pers.diff_diff.tolist(),
    "layer_cos": pers.layer_cos.tolist(),
    "mean_offdiag_diff_vector": float(np.nanmean(pers.diff_vector[upper])),
    "mean_offdiag_diff_diff": float(np.nanmean(pers.diff_diff[upper])),
    "min_offdiag_diff_diff": float(np.nanmin(pers.diff_diff[upper])),
    "orthogonal_layer": ORTH,
    "original_pass_at_1": orth_eval["original"].pass_at_1,
    "orthogonal_pass_at_1": {k: orth_eval[k].pass_at_1 for k in orth_vectors},
    "orthogonal_stderr": {k: orth_eval[k].stderr for k in ["original", *orth_vectors]},
    "base_pass_at_1": orth_eval["base"].pass_at_1,
    "all_layer_pass_at_1": acc_all,
    "pair_accuracy": grid["accuracy"],
    "pair_normalized": grid["normalized"],
    "pairs_better_than_both": [list(p) for p in beyond],
    "pairs_worse_than_best_single": [list(p) for p in harmful],
    "pair_normalized_correlation": corr,
    "pair_half_accuracy": half,
    "mean_pair_sum_pass_at_1": float(np.mean([r["sum"] for r in pair_rows])),
    "mean_pair_half_pass_at_1": float(np.mean([r["half"] for r in pair_rows])),
    "mean_pair_best_single_pass_at_1": float(np.mean([r["best_single"] for r in pair_rows])),
}
results = json.loads(json.dumps(results).replace("NaN", "null"))
write_results(results_path, results)
best_orth = max(results["orthogonal_pass_at_1"].values())
n_pairs = len(pair_rows)
for key, value in {
    "dv_mean": results["mean_offdiag_diff_vector"], "dd_mean": results["mean_offdiag_diff_diff"],
    "dd_min": results["min_offdiag_diff_diff"], "orth_layer": ORTH, "orig_acc": results["original_pass_at_1"],
    "best_orth_acc": best_orth, "base_acc": results["base_pass_at_1"], "n_orth": len(orth_vectors),
    "orth_verdict": ("none of them matched it" if best_orth < results["original_pass_at_1"] - 2 * results["orthogonal_stderr"]["original"]
                     else "at least one matched it within two standard errors"),
    "n_pairs": n_pairs, "n_beyond": len(beyond), "n_harmful": len(harmful), "acc_all": acc_all,
    "corr_dist": corr["distance"], "corr_dd": corr["diff_diff"], "corr_dv": corr["diff_vector"],
    "pair_sum": results["mean_pair_sum_pass_at_1"], "pair_half": results["mean_pair_half_pass_at_1"],
    "pair_single": results["mean_pair_best_single_pass_at_1"],
    "min_denominator": min(acc_all - r["best_single"] for r in pair_rows),
    "max_denominator": max(acc_all - r["best_single"] for r in pair_rows),
    "dv_verdict": ("stays well aligned with the vector trained at the read-out layer, unlike the paper's models"
                   if results["mean_offdiag_diff_vector"] > 0.3 else
                   "is nearly orthogonal to the vector trained at the read-out layer, as in the paper"),
}.items():
    glue(key, value, display=False)
print(json.dumps({k: v for k, v in results.items() if not isinstance(v, list)}, indent=1))

# %% [markdown]
# ## What we found
#
# **Persistence.** Above the diagonal the Diff-Diff cosine averages {glue:text}`dd_mean:.2f` (lowest
# {glue:text}`dd_min:.2f`): the shift a vector causes downstream stays aligned with its own sequence
# mean. The Diff-Vector cosine averages {glue:text}`dv_mean:.2f`: the propagated shift
# {glue:text}`dv_verdict`.
#
# **Orthogonal vectors.** At layer {glue:text}`orth_layer` the original vector reaches
# {glue:text}`orig_acc:.3f` (base {glue:text}`base_acc:.3f`); the best of {glue:text}`n_orth`
# orthogonal vectors reaches {glue:text}`best_orth_acc:.3f`: {glue:text}`orth_verdict`.
#
# **Pairs.** Of {glue:text}`n_pairs` pairs, {glue:text}`n_beyond` beat the better of their two vectors
# by more than two standard errors and {glue:text}`n_harmful` fell below it (all-layer steering:
# {glue:text}`acc_all:.3f`). Averaged over pairs: the sum $s_i + s_j$ reaches {glue:text}`pair_sum:.3f`,
# the mean $(s_i + s_j)/2$ {glue:text}`pair_half:.3f`, the better single vector {glue:text}`pair_single:.3f`.
# Where the sum collapses and the mean does not, the two vectors push along much the same direction
# (high Diff-Vector cosine) and their sum overshoots: on this organism, vectors trained at different
# layers are largely one mechanism, which is why they do not stack. The normalised pair accuracy divides
# by $acc_{all} - \max(acc_i, acc_j)$, which ranges from {glue:text}`min_denominator:.3f` to
# {glue:text}`max_denominator:.3f` here; where it is small the normalised value is a large negative
# number, and such pairs dominate its correlation with layer distance ({glue:text}`corr_dist:.2f`), with
# the Diff-Diff cosine ({glue:text}`corr_dd:.2f`) and with the Diff-Vector cosine
# ({glue:text}`corr_dv:.2f`), so we do not read much into these correlations.
#
# | | paper (Qwen2.5-Math-7B / Llama-3.1-8B) | this run (organism) |
# | --- | --- | --- |
# | Diff-Diff CosSim downstream | clearly above zero | mean above the diagonal, see above |
# | Diff-Vector CosSim downstream | falls quickly with distance, near orthogonal | mean above the diagonal, see above |
# | orthogonal vectors | none matched the original | the verdict above |
# | pairs of vectors | constructive in Qwen, often harmful in Llama | counts above |
