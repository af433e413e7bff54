# %% [markdown]
# # 01 · Training one steering vector with RLOO
#
# The paper trains a single zero-initialised vector $s_l$, added to the residual stream after decoder
# layer $l$ of a frozen model, with RLOO policy gradient {cite:p}`ahmadian2024back,kool2019buy` on
# problems whose answers Math-Verify checks {cite:p}`mathverify`, and reports that even one layer's
# vector recovers a large part of what full RL fine-tuning gains {cite:p}`sinii2025small`. This chapter
# trains one such vector (by default at the last layer) with several training seeds, follows reward,
# $|s|$, the first generated token and completion length over the steps, and compares held-out pass@1
# before and after: the headline is the mean over seeds, and every difference carries a paired error.
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
# The recipe is the authors' ({doc}`notes on their code <../appendix_authors_code>`): $K$ samples per
# prompt at $\tau = 1$, reward 1/0, advantage $A_i = r_i - \frac{1}{K-1}\sum_{j \neq i} r_j$, loss
# $-\sum_i A_i \sum_t \log \pi(y_t)$ over the batch's completion-token count, Adam, gradient clip 2.
# They pick the best of five checkpoints by the *test* benchmarks; here a **validation split disjoint
# from the test problems** decides (parameter `select_on`).

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
seed: int = 0  # the first training seed (sampling and prompt order); later chapters use this seed's vectors
n_seeds: int = 3  # training seeds seed, seed + 1, ...: the headline is their mean
run_dir: Optional[str] = None  # where runs are kept, resumed if present - None: runs/<preset>
layer: Optional[int] = None  # layer to steer - None: the last layer
steps: Optional[int] = None  # RLOO steps - None: the preset's
lr: Optional[float] = None  # learning rate - None: the preset's per-layer table
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing the best snapshot
select_on: str = "validation"  # validation | test - test: the authors' protocol (best checkpoint by the test Average)
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
completions_per_prompt: Optional[int] = None  # samples per prompt, RLOO's group - None: the preset's (paper: 8)
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
max_hours: float = 2.0  # refuse to start when the cost plan exceeds this (hours on this device)
results_path: str = "book/results/01_training.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import pandas as pd
from steerlib import plots
from steerlib.chapter import setup
from steerlib.evaluate import benchmark_table, per_benchmark
from steerlib.lens import first_token_boost
from steerlib.seeds import seed_list, seed_summary, seeded_vector_runs
from steerlib.stats import paired_gain
from steerlib.vectorfile import peft_parity

ch = setup("01_training", globals(), positive=("n_seeds",))
LAYER, SEEDS = ch.P.default_layer, seed_list(ch.P.seed, n_seeds)

# %% [markdown]
# ## Training
# One run per training seed, each checkpointed in its run directory and resumed if it was interrupted;
# snapshots of the vector are kept at the preset's checkpoint steps, and the best of them on the split
# named by `select_on` (validation by default; `test` reproduces the authors' protocol) is the one used
# below. The curves are the first seed's.
# {numref}`fig-01-training` follows the first seed's run step by step.

# %% tags=["hide-input"]
runs = seeded_vector_runs(ch.org, ch.P, LAYER, ch.layout, SEEDS,
                          val_problems=val_problems, select_on=select_on)
run = runs[ch.P.seed]
vec = run.vectors[0]
ch.figure("fig_training", plots.training_curves(run.metrics, f"RLOO on a layer-{LAYER} vector ({ch.P.name})"))

# %% [markdown]
# ```{glue:figure} fig_training
# :name: fig-01-training
#
# Training one vector with RLOO: mean reward of the step's samples, the vector's norm $|s|$, the share of
# samples whose first token is the worked-solution opener, and the mean completion length, per step.
# ```

# %% [markdown]
# ## Held-out pass@1 before and after
# Every seed's chosen snapshot is evaluated on the test split together with the base model (one routed
# batch: each row carries no vector or one seed's vector), so every gain is paired: same problems,
# and its standard error comes from the per-problem differences.
# {numref}`fig-01-before-after` shows every seed's pass@1 beside the base model's, and
# {numref}`fig-01-first-tokens` what the first generated token becomes.

# %% tags=["hide-input"]
evals = ch.evaluate({"base": [], **{f"seed {s} (step {r.step})": r.vectors for s, r in runs.items()}})
base, steered = evals["base"], dict(zip(SEEDS, list(evals.values())[1:]))
# the opener: the token whose probability as the first token the first seed's vector raises most, read from
# the logits (not picked from the samples whose shares it is then compared on); full-vocabulary logits: batch 8
opener = first_token_boost(ch.model, ch.tok, ch.prompts()[0], runs[ch.P.seed].vectors, k=1, batch_size=8)[0][0]
gains = {s: paired_gain(r, base) for s, r in steered.items()}
acc = seed_summary({s: {"acc": r.pass_at_1, "opener": r.first_token_share(opener), "gain": gains[s].estimate,
                        "rise": r.first_token_share(opener) - base.first_token_share(opener)}
                    for s, r in steered.items()},
                   {s: {"acc": r.stderr, "opener": r.first_token_share_se(opener), "gain": r.stderr,
                        "rise": r.first_token_share_se(opener)} for s, r in steered.items()},
                   # every seed's gain and rise subtract the same base: its error once (shares clustered by problem)
                   shared_se={"gain": base.stderr, "rise": base.first_token_share_se(opener)})
ch.table(pd.DataFrame({"pass@1": [r.pass_at_1 for r in evals.values()], "stderr": [r.stderr for r in evals.values()],
                       "gain (paired)": [None, *[str(g) for g in gains.values()]],
                       f"first token '{opener.strip()}'": [r.first_token_share(opener) for r in evals.values()],
                       "mean length": [r.mean_length for r in evals.values()]}, index=list(evals)))

# %% tags=["hide-input"]
bench = benchmark_table(evals)  # a hub preset's benchmarks (AVG@n where the paper uses it); none on the organism
None if bench is None else ch.table(bench)

# %% tags=["hide-input"]
ch.figure("fig_before_after", plots.mode_shares(["base", *[f"+ s{LAYER}, seed {s}" for s in SEEDS]],
                                                [r.pass_at_1 for r in evals.values()],
                                                [r.stderr for r in evals.values()], title="Held-out pass@1 (τ = 1)"))
ch.figure("fig_first_tokens", plots.first_token_bars({"base": dict(base.top_first_tokens(4)),
                                                      f"+ s{LAYER}": dict(steered[ch.P.seed].top_first_tokens(4))}))

# %% [markdown]
# ```{glue:figure} fig_before_after
# :name: fig-01-before-after
#
# Held-out pass@1 at τ = 1 of the base model and of the model with each training seed's vector (the
# snapshot chosen on validation), with standard errors.
# ```

# %% [markdown]
# ```{glue:figure} fig_first_tokens
# :name: fig-01-first-tokens
#
# The four most frequent first generated tokens, base model against the model steered by the first
# seed's vector, as shares of the held-out samples.
# ```

# %% [markdown]
# ## The vector as a PEFT adapter
# A `resid_post` vector is a bias on layer $l$'s `mlp.down_proj`; exported as a rank-1 LoRA with a zero
# `B` matrix and `B`'s bias set to $s$, it serves without steerlib. The adapter's logits are compared
# with the hook's, and the same held-out sampling (same prompts, batches and seed) is run through both
# (the first seed's vector).

# %% tags=["hide-input"]
parity = peft_parity(vec, ch.model, ch.tok, ch.layout.peft_adapter(run.train.run_dir), *ch.prompts(),
                     max_new_tokens=ch.P.max_new_tokens)
ch.table(pd.Series(vars(parity), name="PEFT adapter vs hook"), digits=4)

# %% tags=["remove-cell"]
results = ch.publish({
    "layer": LAYER, "seeds": SEEDS, "base_pass_at_1": base.pass_at_1, "base_stderr": base.stderr,
    "steered_pass_at_1": acc.mean["acc"], "steered_stderr": acc.se["acc"], "steered_sd_over_seeds": acc.sd["acc"],
    "steered_pass_at_1_per_seed": {str(s): r.pass_at_1 for s, r in steered.items()},
    "gain": acc.mean["gain"], "gain_se": acc.se["gain"], "gain_sd_over_seeds": acc.sd["gain"],
    "gain_paired_se_per_seed": {str(s): g.se for s, g in gains.items()}, "best_step": run.step,
    "validation_pass_at_1": run.validation_pass_at_1, "base_opener_share": base.first_token_share(opener),
    "steered_opener_share": acc.mean["opener"], "steered_opener_share_sd": acc.sd["opener"],
    "opener_rise": acc.mean["rise"], "opener_rise_se": acc.se["rise"],
    "vector_norm": float(vec.vector.norm()),
    "train_seconds": run.train_seconds, "median_step_seconds": run.median_step_seconds, "steps": ch.P.steps,
    "select_on": select_on, "n_test_samples": len(base.completions), "peft_max_logit_diff": parity.max_logit_diff,
    "hook_pass_at_1": parity.hook_pass_at_1, "peft_pass_at_1": parity.peft_pass_at_1,
    "peft_identical_completions": parity.identical_completions, "per_benchmark": per_benchmark(evals),
    "opener": opener, "signal_share_per_seed": {str(s): r.signal_share for s, r in runs.items()},
}, opener_repr=repr(opener), n_seeds=len(SEEDS), seed0_gain=gains[ch.P.seed].estimate,
   seed0_gain_se=gains[ch.P.seed].se)
ch.claims(results)

# %% [markdown]
# ## What we found
#
# Vectors at layer {glue:text}`layer`, trained with {glue:text}`n_seeds` seeds (the first for
# {glue:text}`train_seconds:.0f` s, median {glue:text}`median_step_seconds:.2f` s per step; `make book` runs
# two chapters at a time with one thread each, so seconds in the published pages are measured beside
# another chapter), moved held-out
# pass@1 from {glue:text}`base_pass_at_1:.3f` ± {glue:text}`base_stderr:.3f` to
# {glue:text}`steered_pass_at_1:.3f` ± {glue:text}`steered_stderr:.3f` on average over the seeds (standard
# deviation over seeds {glue:text}`steered_sd_over_seeds:.3f`): a gain of {glue:text}`gain:+.3f` ±
# {glue:text}`gain_se:.3f` (the first seed alone: {glue:text}`seed0_gain:+.3f` ± {glue:text}`seed0_gain_se:.3f`,
# paired over problems). The share of samples opening with the token the first seed's vector boosts
# most as the first token (read from the logits, so the samples do not choose the token they are scored on),
# {glue:text}`opener_repr`, went from
# {glue:text}`base_opener_share:.2f` to {glue:text}`steered_opener_share:.2f` (a rise of {glue:text}`opener_rise:+.3f` ±
# {glue:text}`opener_rise_se:.3f`, the error clustered by problem, since samples of one prompt are not
# independent draws), and the first seed's $|s|$
# ended at {glue:text}`vector_norm:.1f` (snapshots chosen on the {glue:text}`select_on` split). Exported as a PEFT adapter, the vector gives the same logits as the
# hook up to {glue:text}`peft_max_logit_diff:.1e` (float rounding of a bias added at a different point of
# the same sum); sampled with the same seed,
# the hook gives pass@1 {glue:text}`hook_pass_at_1:.3f` and the adapter {glue:text}`peft_pass_at_1:.3f`,
# with {glue:text}`peft_identical_completions:.3f` of the completions identical.
#
# | | paper (Qwen2.5-Math-7B, DeepScaleR) | {glue:text}`this_run` |
# | --- | --- | --- |
# | a single-layer vector improves accuracy | yes, at all but two layers | gain {glue:text}`gain:+.3f` ± {glue:text}`gain_se:.3f` (mean of {glue:text}`n_seeds` seeds) |
# | the last-layer vector switches the first token | boosts "To" / "Step" | {glue:text}`opener_repr` share {glue:text}`base_opener_share:.2f` -> {glue:text}`steered_opener_share:.2f` |
#
# On the organism the gain comes from switching the answer mode: the worked mode is nearly always
# right and the direct mode nearly always wrong (chapter 00), so a vector that makes " Step" the first
# token buys almost the whole gap. The organism was built that way: this confirms the recipe, not the
# paper's finding. Chapter 04 asks whether the first token is *all* the vector does.
