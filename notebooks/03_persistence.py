# %% [markdown]
# # 03 · Persistence: does a vector become the later layers' vectors?
#
# A vector added after layer $i$ travels up the residual stream. Does it turn into the vector that RL
# would have trained at a later layer $j$, so that all layers implement one direction carried
# downstream? The paper answers no {cite:p}`sinii2025small`: the shift that $s_i$ causes at layer $j$
# stays aligned with itself across tokens (Diff-Diff cosine clearly above zero) but is nearly orthogonal
# to $s_j$ (Diff-Vector cosine falls quickly with distance), so layers implement distinct mechanisms.
# It also reports that vectors retrained orthogonal to the original never match it, and that vectors
# trained in isolation can be combined, constructively in Qwen, often harmfully in Llama.
#
# ::::{admonition} What this chapter found
# :class: tip
#
# :::{glue:md} claims_note
# :format: myst
# :::
#
# Verdicts as defined on {doc}`../claims`.
# ::::
#
# Definitions are the authors' (the paper, Section 5 and Figures 2 and 13; {doc}`notes on their code <../appendix_authors_code>`). For a prompt, one completion is sampled with
# only $s_i$ active; prompt + completion is teacher-forced with and without $s_i$, and every decoder
# layer's output recorded: $\Delta_j(t) = h_j(t; s_i) - h_j(t)$ (steered minus base) at every token.
# **Diff-Vector** $= \cos(\Delta_j(t), s_j)$, **Diff-Diff** $= \cos(\Delta_j(t), \overline{\Delta_j})$
# with $\overline{\Delta_j}$ the mean over the sequence's tokens; each averaged over tokens, then prompts.
# Pairs: **normalised pair accuracy** $= (acc_{ij} - \max(acc_i, acc_j)) / (acc_{all} - \max(acc_i, acc_j))$,
# 0 = no better than the better vector alone, 1 = as good as all-layer steering.
#
# The vectors studied here are chapter 02's sweep of its first training seed; every number that enters
# a verdict on the claims page (the Diff-Vector and Diff-Diff means, the orthogonal vectors' shortfall,
# the pairs' mean gap to their better vector) is measured again on every training seed's sweep, and a
# verdict stands only where all seeds give the same.
#
# **The tests, fixed before the run.** Diff-Diff: reproduced if the mean cosine above the diagonal lies
# above zero by more than two standard errors (bootstrap over prompts), refuted if below. Orthogonal:
# reproduced if the original beats the best orthogonal vector by more than two standard errors, refuted
# if the orthogonal vector is better. Pairs: the mean over layer pairs of pass@1 with both vectors minus
# the better single vector's; the paper's "constructive" reads as above zero, "harmful" as below.

# %% tags=["remove-cell", "colab-install"]
# Colab: installs steerlib from this book's repository; Colab's own torch and libraries are kept.
# Gated models (llama3.1-8b-instruct): accept the licence on huggingface.co, then
#   from huggingface_hub import login; login()     (or add HF_TOKEN under Colab's Secrets)
# Keep runs across Colab sessions on Google Drive, then set run_dir in the parameters below:
#   from google.colab import drive; drive.mount("/content/drive")  # run_dir = "/content/drive/MyDrive/runs"
import subprocess, sys  # noqa: E401
from typing import Optional  # noqa: F401 - the parameters' annotations
STEERLIB = "steerlib @ git+https://github.com/steerlib/small-vectors-book"
if "google.colab" in sys.modules:
    if STEERLIB.endswith("/steerlib/small-vectors-book"):  # the placeholder of _config.yml
        raise SystemExit("set STEERLIB above to this book's repository (_config.yml holds a placeholder)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", STEERLIB], check=True)

# %% tags=["parameters"]
preset: str = "organism"  # organism | qwen2.5-math-1.5b | qwen2.5-math-7b | llama3.1-8b-instruct
seed: int = 0  # seeds sampling and prompt order
n_seeds: int = 3  # training seeds every verdict's number is repeated on (chapter 02's sweeps; own orthogonal runs)
run_dir: Optional[str] = None  # shared with chapters 01-02 (sweep vectors reused) - None: runs/<preset>
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
completions_per_prompt: Optional[int] = None  # samples per prompt, RLOO's group - None: the preset's (paper: 8)
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
persistence_prompts: int = 64  # prompts for the propagated shifts
orthogonal_layer: Optional[int] = None  # layer of the orthogonal-vector test - None: the last layer
n_orthogonal: int = 2  # orthogonal vectors trained one after another
max_hours: float = 2.0  # refuse to start when the cost plan exceeds this (hours on this device)
results_path: str = "book/results/03_persistence.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import pandas as pd
import torch
from steerlib import plots
from steerlib.chapter import setup
from steerlib.evaluate import summary_table
from steerlib.lens import lens_table
from steerlib.propagation import pair_study, persistence
from steerlib.seeds import seed_list, seeded_orthogonal_gaps, seeded_pair_gaps
from steerlib.selection import orthogonal_gap, orthogonal_runs, vector_run

ch = setup("03_persistence", globals(), positive=("persistence_prompts", "n_orthogonal", "n_seeds"))
ORTH = ch.P.n_layers - 1 if orthogonal_layer is None else orthogonal_layer
ch.P.check_layer(ORTH)
LAYERS, vecs = list(range(ch.P.n_layers)), ch.vectors  # chapter 02's sweep (trained if missing)

# %% [markdown]
# ## Propagated shifts
# Rows: the layer $i$ where the vector is injected; columns: the layer $j$ whose output is read.
# Below the diagonal the shift is exactly zero (left blank); on the diagonal $\Delta_i = s_i$, so both
# cosines are 1 by construction.
# {numref}`fig-03-persistence` gives both cosines for every pair of layers, and {numref}`fig-03-distance`
# sets them against the distance between the two layers.

# %% tags=["hide-input"]
pers = persistence(ch.model, ch.tok, ch.prompts("test", persistence_prompts)[0], vecs,
                   max_new_tokens=ch.P.max_new_tokens, seed=seed)
ch.figure("fig_persistence", plots.heatmaps(
    {"Diff-Vector CosSim  cos(Δ_j, s_j)": pers.diff_vector, "Diff-Diff CosSim  cos(Δ_j, mean Δ_j)": pers.diff_diff},
    f"Persistence of single-layer vectors ({ch.P.name})", xlabel="read-out layer j", ylabel="injection layer i",
    vmin=-1, vmax=1))
above = [r for r in pers.by_distance() if r["j"] > r["i"]]
ch.figure("fig_distance", plots.scatter(
    above, "distance", {"diff_vector": "Diff-Vector", "diff_diff": "Diff-Diff"},
    "Cosines against layer distance (j > i)", xlabel="normalised distance (j − i) / (L − 1)", ylabel="mean cosine"))

# %% [markdown]
# ```{glue:figure} fig_persistence
# :name: fig-03-persistence
#
# Persistence (the paper's Figure 2 on the organism). Left, Diff-Vector: the cosine between the shift
# $\Delta_j$ that the vector injected at layer $i$ (rows) causes at layer $j$ (columns) and the vector
# trained at layer $j$. Right, Diff-Diff: the cosine between $\Delta_j$ at each token and its mean over
# the sequence. Below the diagonal the shift is zero (blank).
# ```

# %% [markdown]
# ```{glue:figure} fig_distance
# :name: fig-03-distance
#
# The same cosines (above the diagonal) against the normalised distance between injection and
# read-out layer.
# ```

# %% [markdown]
# ## Every training seed
# The mean Diff-Vector and Diff-Diff cosines above the diagonal again, for the sweep of each training
# seed (chapter 02; the shifts and the read-out layers' vectors both from that seed's sweep), on the same
# prompts. The claims page reads the first seed's numbers; a verdict stands only where every seed's
# gives the same.

# %% tags=["hide-input"]
SEEDS = seed_list(ch.P.seed, n_seeds)
seed_vecs = ch.seed_vectors(SEEDS[1:])
seed_pers = {ch.P.seed: pers, **{s: persistence(ch.model, ch.tok, ch.prompts("test", persistence_prompts)[0], v,
                                                max_new_tokens=ch.P.max_new_tokens, seed=seed)
                                 for s, v in seed_vecs.items()}}
dv_per_seed = {s: p.offdiag_diff_vector() for s, p in seed_pers.items()}
dd_per_seed = {s: p.offdiag_diff_diff() for s, p in seed_pers.items()}
ch.table(pd.DataFrame({"mean Diff-Vector cosine (j > i)": {f"seed {s}": str(e) for s, e in dv_per_seed.items()},
                       "mean Diff-Diff cosine (j > i)": {f"seed {s}": str(e) for s, e in dd_per_seed.items()}}))

# %% [markdown]
# The size of the propagated shift relative to the injected vector (mean $|\Delta_j(t)|$ / $|s_i|$,
# rows $i$, columns $j$): does the vector's push grow, persist or fade on the way up? Below it, the
# last layer's mean shift for each injection layer read through the unembedding (top and bottom tokens
# by cosine with $W_U$ rows, as the authors' script ranks them).

# %% tags=["hide-input"]
ch.table(pd.DataFrame(pers.growth(vecs)).rename_axis(index="injection layer i", columns="read-out layer j"), 2)

# %% tags=["hide-input"]
ch.table(pd.DataFrame(lens_table(ch.model, ch.tok, pers.final_shift, columns=("top by cosine", "bottom by cosine"))
             ).set_index("direction").rename_axis("injection layer").drop(columns="|·|"))

# %% [markdown]
# ## Orthogonal vectors
# A vector is retrained at the same layer with the same recipe, constrained to stay orthogonal to the
# original (its component along the original is removed in every forward pass); a second one is then
# trained orthogonal to both. Each run's best snapshot is chosen on the validation split; all are
# evaluated with the original on the same held-out problems.
# {numref}`fig-03-orthogonal` compares them.

# %% tags=["hide-input"]
orth = {"original": vecs[ORTH],
        **orthogonal_runs(ch.org, ch.P, vecs[ORTH], ch.layout, n_orthogonal, val_problems=val_problems)}
orth_eval = ch.evaluate({"base": [], **{k: [v] for k, v in orth.items()}})
cos_orig = {k: float(torch.cosine_similarity(v.vector, vecs[ORTH].vector, dim=0)) for k, v in orth.items()}
ch.table(summary_table(orth_eval, first_tokens=3, extra={"|s|": {k: float(v.vector.norm()) for k, v in orth.items()},
                                                         "cos with original": cos_orig}))

# %% [markdown]
# The same test on every other training seed's vector at this layer (its own orthogonal runs, under
# `seed<k>/` in the run folder): the original's pass@1 minus the best orthogonal vector's.

# %% tags=["hide-input"]
orth_per_seed = {ch.P.seed: orthogonal_gap({k: r.pass_at_1 for k, r in orth_eval.items()},
                                           {k: r.stderr for k, r in orth_eval.items()}),
                 **seeded_orthogonal_gaps(ch.org, ch.P, {s: v[ORTH] for s, v in seed_vecs.items()}, ch.layout,
                                          n_orthogonal, val_problems=val_problems)}
ch.table(pd.Series({f"seed {s}": str(e) for s, e in orth_per_seed.items()}, name="original − best orthogonal"))

# %% tags=["hide-input"]
ch.figure("fig_orthogonal", plots.bars({k: r.pass_at_1 for k, r in orth_eval.items()},
                                       f"Orthogonal vectors at layer {ORTH} ({ch.P.name})",
                                       ylabel="pass@1 (τ = 1, held-out)",
                                       errors={k: r.stderr for k, r in orth_eval.items()}))

# %% [markdown]
# ```{glue:figure} fig_orthogonal
# :name: fig-03-orthogonal
#
# Held-out pass@1 of the original vector and of vectors retrained at the same layer orthogonal to it
# (each orthogonal to all before it), with the base model; bars are standard errors.
# ```

# %% [markdown]
# ## Combining vectors trained in isolation
# Every pair of single-layer vectors applied together, with every single vector, all-layer steering
# (chapter 02's run, its best snapshot chosen on validation) and the base model, on the same held-out
# problems in one routed batch. As a diagnostic of our own (not in the paper), every pair is also
# applied at half strength, $(s_i + s_j)/2$: if two vectors push along much the same direction, their
# sum overshoots and their mean should not.
# {numref}`fig-03-pairs` maps every pair and {numref}`fig-03-pair-scatter` sets each pair against its better
# single vector.

# %% tags=["hide-input"]
all_layer = vector_run(ch.org, ch.P, LAYERS, ch.layout.all_layer(), mode="all_layer", val_problems=val_problems)
pairs = pair_study(ch.model, ch.tok, *ch.prompts(), vecs, all_layer.vectors, max_new_tokens=ch.P.max_new_tokens)
ch.figure("fig_pairs", plots.heatmaps(
    {"pass@1, s_i + s_j (diagonal: s_i)": pairs.grid["accuracy"], "pass@1, (s_i + s_j) / 2": pairs.half,
     "normalised pair accuracy": pairs.grid["normalized"]},
    f"Pairs of single-layer vectors ({ch.P.name}; base {pairs.results['base'].pass_at_1:.3f}, "
    f"all-layer {pairs.acc_all:.3f})", xlabel="layer", ylabel="layer", cmap="vlag", vmin=-2, vmax=1))

ch.figure("fig_pair_scatter", plots.scatter(
    pairs.rows(pers), "diff_vector",
    {"sum": "s_i + s_j", "half": "(s_i + s_j) / 2", "best_single": "better single vector"},
    "Pair accuracy against Diff-Vector CosSim(i, j)", xlabel="Diff-Vector CosSim(i, j)",
    ylabel="pass@1 (τ = 1, held-out)"))

# %% [markdown]
# ```{glue:figure} fig_pairs
# :name: fig-03-pairs
#
# Pairs of single-layer vectors applied together. Top left: pass@1 of $s_i + s_j$ (the diagonal holds
# each vector alone); top right: pass@1 at half strength, $(s_i + s_j)/2$; bottom: the normalised pair
# accuracy, whose colour scale is clipped (the panel's title gives the lowest value; the numbers in the
# cells are not clipped).
# ```

# %% [markdown]
# Every other training seed's pairs (its own sweep; single vectors and sums only): the mean over pairs
# of the sum's pass@1 minus the better single vector's.

# %% tags=["hide-input"]
pairs_per_seed = {ch.P.seed: pairs.gap(), **seeded_pair_gaps(ch.org, ch.P, seed_vecs)}
ch.table(pd.Series({f"seed {s}": str(e) for s, e in pairs_per_seed.items()}, name="pair − better single vector"))

# %% [markdown]
# ```{glue:figure} fig_pair_scatter
# :name: fig-03-pair-scatter
#
# Every pair's pass@1 (sum and half strength) and the better of its two single vectors, against the
# Diff-Vector cosine between the two layers.
# ```

# %% tags=["remove-cell"]
best_orth, orig = max(orth_eval[k].pass_at_1 for k in orth if k != "original"), orth_eval["original"]
results = ch.publish({
    "n_layers": ch.P.n_layers, "persistence_prompts": persistence_prompts, **pers.summary(),
    "orthogonal_layer": ORTH, "original_pass_at_1": orth_eval["original"].pass_at_1,
    "orthogonal_pass_at_1": {k: orth_eval[k].pass_at_1 for k in orth if k != "original"},
    "orthogonal_stderr": {k: orth_eval[k].stderr for k in orth}, "base_pass_at_1": orth_eval["base"].pass_at_1,
    **pairs.summary(), "pair_normalized_correlation": pairs.correlations(pers),
    "diff_vector_per_seed": dv_per_seed, "diff_diff_per_seed": dd_per_seed, "orthogonal_per_seed": orth_per_seed,
    "pairs_per_seed": pairs_per_seed, "seeds": SEEDS,
}, best_orth_acc=best_orth, n_orth=n_orthogonal, n_pairs=len(pairs.rows()),
   n_beyond=len(pairs.beyond(1)), n_harmful=len(pairs.beyond(-1)),
   **{f"corr_{k}": v for k, v in pairs.correlations(pers).items()},
   orth_verdict=("none of them matched it" if best_orth < orig.pass_at_1 - 2 * orig.stderr
                 else "at least one matched it within two standard errors"),
   dv_verdict=("stays well aligned with the vector trained at the read-out layer, unlike the paper's models"
               if pers.summary()["mean_offdiag_diff_vector"] > 0.3 else
               "is nearly orthogonal to the vector trained at the read-out layer, as in the paper"))
ch.claims(results)

# %% [markdown]
# ## What we found
#
# **Persistence.** Above the diagonal the Diff-Diff cosine averages
# {glue:text}`mean_offdiag_diff_diff:.2f` ± {glue:text}`mean_offdiag_diff_diff_se:.2f` (lowest
# {glue:text}`min_offdiag_diff_diff:.2f`): the shift a
# vector causes downstream stays aligned with its own sequence mean. The Diff-Vector cosine averages
# {glue:text}`mean_offdiag_diff_vector:.2f` ± {glue:text}`mean_offdiag_diff_vector_se:.2f` (bootstrap over
# prompts): the propagated shift {glue:text}`dv_verdict`.
#
# **Orthogonal vectors.** At layer {glue:text}`orthogonal_layer` the original vector reaches
# {glue:text}`original_pass_at_1:.3f` (base {glue:text}`base_pass_at_1:.3f`); the best of
# {glue:text}`n_orth` orthogonal vectors reaches {glue:text}`best_orth_acc:.3f`: {glue:text}`orth_verdict`.
#
# **Pairs.** Of {glue:text}`n_pairs` pairs, {glue:text}`n_beyond` beat the better of their two vectors
# by more than two standard errors and {glue:text}`n_harmful` fell below it (all-layer steering:
# {glue:text}`all_layer_pass_at_1:.3f`). Averaged over pairs: the sum $s_i + s_j$ reaches
# {glue:text}`mean_pair_sum_pass_at_1:.3f`, the mean $(s_i + s_j)/2$ {glue:text}`mean_pair_half_pass_at_1:.3f`,
# the better single vector {glue:text}`mean_pair_best_single_pass_at_1:.3f`. Where the sum collapses
# and the mean does not, the vectors push along one direction and their sum overshoots; where the mean
# also falls short of the better single vector, they interfere beyond overshooting. The normalised pair
# accuracy divides by $acc_{all} - \max(acc_i, acc_j)$ ({glue:text}`min_denominator:.3f` to
# {glue:text}`max_denominator:.3f` here); small denominators give large negative values that dominate
# its correlations with distance ({glue:text}`corr_distance:.2f`), Diff-Diff ({glue:text}`corr_diff_diff:.2f`)
# and Diff-Vector ({glue:text}`corr_diff_vector:.2f`), so we do not read much into them.
#
# | | paper (Qwen2.5-Math-7B / Llama-3.1-8B) | {glue:text}`this_run` |
# | --- | --- | --- |
# | Diff-Diff CosSim downstream | clearly above zero | mean {glue:text}`mean_offdiag_diff_diff:.2f` ± {glue:text}`mean_offdiag_diff_diff_se:.2f` |
# | Diff-Vector CosSim downstream | falls quickly with distance, near orthogonal | mean {glue:text}`mean_offdiag_diff_vector:.2f` ± {glue:text}`mean_offdiag_diff_vector_se:.2f` |
# | orthogonal vectors | none matched the original | {glue:text}`orth_verdict` |
# | pairs of vectors | constructive in Qwen, often harmful in Llama | {glue:text}`n_beyond` better, {glue:text}`n_harmful` worse of {glue:text}`n_pairs` |
