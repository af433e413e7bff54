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
# # The last layer's vector as a first-token substitution bias
#
# The paper's headline for the last layer {cite:p}`sinii2025small`: read through the final norm and the
# unembedding (the logit lens {cite:p}`nostalgebraist2020logitlens`), the last-layer vector boosts
# opening tokens ("To" in Qwen, "Step" in Llama); although it is added at every position, its effect
# concentrates on the *first* generated token, and forcing that token after the prompt of the
# unsteered model recovers about three quarters of the vector's accuracy gain in Qwen. Vectors of
# earlier layers read through the same lens mostly push tokens *down* (non-English tokens in the
# paper's models).
#
# This chapter reads every layer's vector through the lens (ranked by probability and by cosine with
# the unembedding rows, the authors' two rankings), measures where along a completion the last-layer
# vector changes the next-token distribution (KL divergence between steered and unsteered
# predictions, teacher-forced on completions sampled with the vector; our choice of measure, the paper
# gives none), runs the prefix test, and retrains the last-layer vector with the prefix present to see
# what it adds beyond the first token (the authors' `append_to_True` control, whose result is not
# published).

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
run_dir: str = "runs/organism"  # run directory shared with chapters 01-03 - sweep vectors are reused
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
shift_prompts: int = 128  # prompts for the per-position shift
lens_k: int = 6  # tokens listed per vector
retrain_with_prefix: bool = True  # retrain the last-layer vector with the prefix in the prompt
results_path: str = "book/results/04_logit_lens.json"  # headline numbers - JSON

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from steerlib import plots
from steerlib.evaluate import evaluate_routed, generate
from steerlib.lens import first_token_boost, lens_scores, next_token_shift, top_token_ids, top_tokens
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.sweep import layer_vectors, select_best, split_prompts, train_vectors
from steerlib.vectorfile import load_vectors
from steerlib.world import DIRECT_OPENER

if shift_prompts < 1 or lens_k < 1:
    raise ValueError("shift_prompts and lens_k must be >= 1")
P = resolve_preset(preset, steps=steps, model=model, eval_problems=eval_problems, seed=seed,
                   prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens)
RUN = Path(run_dir)
LAYERS = list(range(P.n_layers))
LAST = P.n_layers - 1
org = load_model(P)
tok = org.tokenizer
vecs = layer_vectors(org, P, RUN, val_problems=val_problems)  # chapter 02's sweep (trained if missing)
print(f"preset {P.name}: last layer {LAST}, |s_last| = {float(vecs[LAST].vector.norm()):.2f}")

# %% [markdown]
# ## Every layer's vector through the lens
# Top tokens by probability ($\mathrm{softmax}(W_U \cdot \mathrm{norm}(s_l))$) and by cosine with the
# unembedding rows, and the most pushed-down tokens (lowest cosine).

# %%
fmt = lambda pairs: ", ".join(f"{t!r} {v:.2f}" for t, v in pairs)  # noqa: E731
lens_table = pd.DataFrame([{
    "layer": l,
    "|s|": float(vecs[l].vector.norm()),
    "top by probability": fmt(top_tokens(org.model, tok, vecs[l].vector, k=lens_k)),
    "top by cosine": fmt(top_tokens(org.model, tok, vecs[l].vector, k=lens_k, ranking="cossim")),
    "bottom by cosine": fmt(top_tokens(org.model, tok, vecs[l].vector, k=lens_k, ranking="cossim", bottom=True)),
} for l in LAYERS]).set_index("layer")
lens_table

# %%
ids = []
for l in LAYERS:  # the two most aligned and the most anti-aligned token of every layer's vector
    for i, _ in top_token_ids(org.model, tok, vecs[l].vector, k=2, ranking="cossim") + \
            top_token_ids(org.model, tok, vecs[l].vector, k=1, ranking="cossim", bottom=True):
        if i not in ids:
            ids.append(i)
shown = [tok.decode([i]) for i in ids]
cos = np.array([[float(lens_scores(org.model, vecs[l].vector, "cossim")[i]) for i in ids] for l in LAYERS])
fig = plots.heatmaps({"cos(s_l, W_U[token])": cos.T}, f"Logit lens of every layer's vector ({P.name})",
                     xlabel="layer", ylabel="token", yticks=[repr(t) for t in shown], vmin=-1, vmax=1)
glue("fig_lens", fig, display=False)
fig

# %% [markdown]
# ## The first generated token
# The change in each token's probability as the *first* generated token when the last-layer vector is
# added (averaged over held-out prompts); the most boosted token is the prefix used below.

# %%
prompts, answers = split_prompts(P, tok, "test", P.eval_problems)
boost = first_token_boost(org.model, tok, prompts[:shift_prompts], [vecs[LAST]], k=5)
boost_table = pd.DataFrame(boost, columns=["token", "P(first) base", "P(first) steered"]).set_index("token")
PREFIX = boost[0][0]
glue("prefix_token", repr(PREFIX), display=False)
boost_table

# %% [markdown]
# ## Where along the completion the vector acts
# KL(steered ‖ base) of the next-token distribution at each completion position, teacher-forced on
# completions sampled with each layer's vector. Position 0 is the prediction of the first generated
# token. The share is the first position's part of the summed KL over all positions and prompts.

# %%
shifts, curves = {}, {}
for l in LAYERS:
    comps = generate(org.model, tok, prompts[:shift_prompts], vectors=[vecs[l]], max_new_tokens=P.max_new_tokens,
                     seed=seed)
    shifts[l] = next_token_shift(org.model, tok, prompts[:shift_prompts], [c.token_ids for c in comps], [vecs[l]])
for l in sorted({0, max(0, LAST - 1), LAST}):
    curves[f"layer {l}"] = shifts[l].mean_by_position(min(32, P.max_new_tokens))
fig = plots.position_curve(curves, f"Where the vector changes predictions ({P.name})",
                           ylabel="mean KL(steered ‖ base), nats")
glue("fig_positions", fig, display=False)
fig

# %%
share_table = pd.DataFrame([{"layer": l, "first-token share of KL": shifts[l].first_token_share(),
                             "KL at position 0": float(np.mean([k[0] for k in shifts[l].kl if len(k)])),
                             "mean KL at later positions": float(np.mean(np.concatenate([k[1:] for k in shifts[l].kl]))),
                             "mean completion length": float(np.mean([len(k) for k in shifts[l].kl]))}
                            for l in LAYERS]).set_index("layer")
share_table

# %% [markdown]
# ## The prefix test
# The most boosted token is appended after each prompt of the unsteered model (no vector), and the
# vector is also evaluated with that prefix; all on the same held-out problems.

# %%
plain = evaluate_routed(org.model, tok, prompts, answers, {"base": [], "vector": [vecs[LAST]]},
                        max_new_tokens=P.max_new_tokens)
prefixed = evaluate_routed(org.model, tok, prompts, answers, {"prefix": [], "prefix + vector": [vecs[LAST]]},
                           max_new_tokens=P.max_new_tokens, prefix=PREFIX)
evals = {**plain, **prefixed}
base_acc, vec_acc, prefix_acc = plain["base"].pass_at_1, plain["vector"].pass_at_1, prefixed["prefix"].pass_at_1
gain = vec_acc - base_acc
prefix_share = (prefix_acc - base_acc) / gain if gain else float("nan")

# %% [markdown]
# The last-layer vector retrained from zero with the prefix already in every training prompt (same
# recipe; best snapshot on validation problems with the prefix): what is left for it to learn once the
# first token is given?

# %%
retrained = None
if retrain_with_prefix:
    r = train_vectors(org, P, [LAST], RUN / f"prefix-{LAST}", prompt_suffix=PREFIX)
    step, _ = select_best(org, P, {"p": r.snapshots}, n_problems=val_problems, prefix=PREFIX)["p"]
    retrained = load_vectors(r.snapshots[step], org.model).vectors[0]
    evals.update(evaluate_routed(org.model, tok, prompts, answers, {"prefix + retrained vector": [retrained]},
                                 max_new_tokens=P.max_new_tokens, prefix=PREFIX))
fig = plots.bars({k: v.pass_at_1 for k, v in evals.items()}, f"The prefix test, last layer ({P.name})",
                 ylabel="pass@1 (τ = 1, held-out)", errors={k: v.stderr for k, v in evals.items()})
glue("fig_prefix", fig, display=False)
fig

# %%
rows = [{"condition": k, "pass@1": v.pass_at_1, "stderr": v.stderr, "mean length": v.mean_length,
         "top first tokens": ", ".join(f"{t!r} {s:.2f}" for t, s in v.top_first_tokens(3))} for k, v in evals.items()]
if retrained is not None:
    rows.append({"condition": "cos(retrained, original)",
                 "pass@1": float(torch.cosine_similarity(retrained.vector, vecs[LAST].vector, dim=0))})
pd.DataFrame(rows).set_index("condition")

# %%
retrained_acc = evals["prefix + retrained vector"].pass_at_1 if retrained is not None else None
results = {
    "preset": P.name,
    "layer": LAST,
    "prefix_token": PREFIX,
    "first_token_boost": [{"token": t, "p_base": a, "p_steered": b} for t, a, b in boost],
    "first_token_shift_share": shifts[LAST].first_token_share(),
    "first_token_shift_share_per_layer": {str(l): shifts[l].first_token_share() for l in LAYERS},
    "base_pass_at_1": base_acc,
    "steered_pass_at_1": vec_acc,
    "prefix_pass_at_1": prefix_acc,
    "prefix_plus_vector_pass_at_1": prefixed["prefix + vector"].pass_at_1,
    "prefix_gain_share": prefix_share,
    "prefix_retrained_pass_at_1": retrained_acc,
    "retrained_adds": None if retrained_acc is None else retrained_acc - prefix_acc,
    "retrained_cos_original": None if retrained is None else float(torch.cosine_similarity(retrained.vector, vecs[LAST].vector, dim=0)),
    "lens_top_prob": {str(l): top_tokens(org.model, tok, vecs[l].vector, k=lens_k) for l in LAYERS},
    "lens_bottom_cos": {str(l): top_tokens(org.model, tok, vecs[l].vector, k=lens_k, ranking="cossim", bottom=True)
                        for l in LAYERS},
}
write_results(results_path, results)
for key, value in {"share_first": results["first_token_shift_share"], "base_acc": base_acc, "vec_acc": vec_acc,
                   "prefix_acc": prefix_acc, "prefix_share": prefix_share,
                   "prefix_vec_acc": results["prefix_plus_vector_pass_at_1"],
                   "retrained_acc": retrained_acc if retrained_acc is not None else float("nan"),
                   "retrained_adds": results["retrained_adds"] if retrained_acc is not None else float("nan"),
                   "top_last": repr(results["lens_top_prob"][str(LAST)][0][0]),
                   "bottom_common": repr(max((b[0][0] for b in results["lens_bottom_cos"].values()),
                                             key=[b[0][0] for b in results["lens_bottom_cos"].values()].count)),
                   "n_bottom_common": max([b[0][0] for b in results["lens_bottom_cos"].values()].count(b[0][0])
                                          for b in results["lens_bottom_cos"].values()),
                   "n_layers": P.n_layers,
                   "bottom_note": ("it is the opening word of the organism's direct-answer mode, the mode the vectors steer away from"
                                   if P.train_source == "organism" and max((b[0][0] for b in results["lens_bottom_cos"].values()),
                                   key=[b[0][0] for b in results["lens_bottom_cos"].values()].count) == DIRECT_OPENER
                                   else "see the first table for what it is"),
                   "len_base": plain["base"].mean_length, "len_vec": plain["vector"].mean_length}.items():
    glue(key, value, display=False)
print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict | list)}, indent=1))

# %% [markdown]
# ## What we found
#
# Through the lens the last-layer vector's top token is {glue:text}`top_last`. The token most pushed
# down (lowest cosine) is {glue:text}`bottom_common` for {glue:text}`n_bottom_common` of the
# {glue:text}`n_layers` vectors: {glue:text}`bottom_note`. The token whose
# probability as the first generated token rises most is {glue:text}`prefix_token`. Of the KL the
# last-layer vector causes along its completions, a share of {glue:text}`share_first:.2f` falls on the
# first generated token (the table gives every layer's share).
#
# Prefix test: base {glue:text}`base_acc:.3f`, vector {glue:text}`vec_acc:.3f`, prefix alone
# {glue:text}`prefix_acc:.3f`, so the prefix recovers {glue:text}`prefix_share:.2f` of the vector's gain;
# prefix + vector {glue:text}`prefix_vec_acc:.3f`. A vector retrained with the prefix present reaches
# {glue:text}`retrained_acc:.3f`, adding {glue:text}`retrained_adds:.3f` over the prefix alone.
#
# | | paper (Qwen2.5-Math-7B) | this run (organism) |
# | --- | --- | --- |
# | top lens token of the last-layer vector | "To" (Qwen), "Step" (Llama) | above |
# | effect concentrated on the first token | yes (token-substitution bias) | share above |
# | prefix recovers of the gain | about three quarters | share above |
# | vector retrained with the prefix adds | not published | above |
# | earlier layers' vectors | push non-English tokens down | the most pushed-down token, above |
