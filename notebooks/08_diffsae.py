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
# # DiffSAE: features of the steering-induced change
#
# The paper trains a sparse autoencoder on the *difference* between steered and unsteered activations
# and ranks its features by how much more often they fire on correct than on incorrect generations
# {cite:p}`sinii2025small`; reviewers noted that the top feature can also track incorrectness and that
# about half of the correct generations activate it (PAPER.md §5.6). Architecture, width and sparsity
# were not published, so the choices here are ours: a top-$k$ SAE (no decoder bias, so the mean shift
# is a feature too) on the per-token differences $\Delta_j(t) = h_j(t; s_i) - h_j(t; \text{base})$ at a
# read-out layer $j$ for the vector of a middle layer $i$, collected on completions sampled with the
# vector (prompt and completion tokens; the last prompt token's activation decides the first
# generated token). At the injection layer itself $\Delta_i(t) = s_i$ at every token, so the read-out
# layer must lie above it.
#
# A feature *fires on a generation* when it is active at any of its tokens. "Share of the vector's
# effect explained" is measured on next-token predictions along the completions: the read-out
# layer's difference is replaced by its reconstruction from the chosen features only, and the share is
# $1 - \mathrm{KL}(\text{steered} \,\|\, \text{patched}) / \mathrm{KL}(\text{steered} \,\|\, \text{base})$.

# %% tags=["remove-cell"]
import sys
from typing import Optional

if "google.colab" in sys.modules:  # Colab only: install steerlib, keep Colab's own torch
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "steerlib[book] @ git+https://github.com/steerlib/small-vectors-book"], check=True)

# %% tags=["parameters"]
preset: str = "organism"  # organism | qwen2.5-math-1.5b | qwen2.5-math-7b | llama3.1-8b-instruct
seed: int = 0  # seeds sampling, the SAE and prompt order
run_dir: str = "runs/organism"  # run directory shared with chapters 01-07 - sweep vectors are reused
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
vector_layer: Optional[int] = None  # the steering vector studied - None: layer n_layers // 2 - 1
read_layer: Optional[int] = None  # where differences are read - None: the last layer
sae_prompts: int = 512  # rollouts the SAE is trained on - validation problems
n_features: int = 64  # SAE width
k: int = 4  # active features per token
sae_steps: int = 3000  # SAE training steps
top_n: int = 3  # top features whose share of the effect is measured
results_path: str = "book/results/08_diffsae.json"  # headline numbers - JSON

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from steerlib import plots
from steerlib.diffsae import collect_diffs, explained_share, feature_stats, train_sae
from steerlib.lens import top_tokens
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.sweep import layer_vectors, split_prompts

P = resolve_preset(preset, steps=steps, model=model, seed=seed, prompts_per_step=prompts_per_step,
                   max_new_tokens=max_new_tokens)
VL = max(0, P.n_layers // 2 - 1) if vector_layer is None else vector_layer
RL = P.n_layers - 1 if read_layer is None else read_layer
P.check_layer(VL)
P.check_layer(RL)
if RL <= VL:
    raise ValueError(f"read_layer ({RL}) must lie above vector_layer ({VL}): at the injection layer the difference is the vector itself")
if min(sae_prompts, n_features, k, sae_steps, top_n) < 1 or k > n_features or top_n > n_features:
    raise ValueError("sae_prompts, n_features, k, sae_steps, top_n must be >= 1, with k and top_n <= n_features")
RUN = Path(run_dir)
org = load_model(P)
tok = org.tokenizer
vecs = layer_vectors(org, P, RUN, val_problems=val_problems)  # chapter 02's sweep (trained if missing)
v = vecs[VL]
print(f"preset {P.name}: vector of layer {VL} (|s| = {float(v.vector.norm()):.2f}), differences read after layer {RL}")

# %% [markdown]
# ## Collecting differences and training the SAE

# %%
prompts, answers = split_prompts(P, tok, "validation", sae_prompts)
diffs = collect_diffs(org.model, tok, prompts, answers, v, RL, max_new_tokens=P.max_new_tokens, seed=seed)
data = diffs.stacked()
torch.manual_seed(seed)
sae, hist = train_sae(data, n_features, k, steps=sae_steps, seed=seed)
n_correct = sum(diffs.correct)
print(f"{len(diffs.per_seq)} rollouts ({n_correct} correct), {data.shape[0]} token differences; "
      f"mean |Δ| {float(data.norm(dim=-1).mean()):.2f}; final FVU {hist['fvu'][-1]:.3f}")
fig = plots.curves(hist["step"], {"fraction of variance unexplained": hist["fvu"]},
                   f"DiffSAE training (width {n_features}, k = {k})", xlabel="step", ylabel="FVU (batch)", ylim=None)
fig

# %% [markdown]
# ## Features on correct and incorrect generations
# Every feature's firing rate on correct against incorrect generations; features off the diagonal
# separate them. The table lists the features with the largest absolute difference and what their
# decoder directions say through the logit lens (exact for the last layer's residual stream).

# %%
stats = feature_stats(sae, diffs)
fig = plots.scatter([{"incorrect": s["incorrect_rate"], "correct": s["correct_rate"]} for s in stats], "incorrect",
                    {"correct": "feature"}, f"Firing rate per feature (layer {VL} vector, read after layer {RL})",
                    xlabel="fires on incorrect generations (share)", ylabel="fires on correct generations (share)")
fig.axes[0].plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
glue("fig_rates", fig, display=False)
fig

# %%
fmt = lambda pairs: ", ".join(f"{t!r} {c:.2f}" for t, c in pairs)  # noqa: E731
top = stats[:8]
table = pd.DataFrame([{**s, "lens top (cosine)": fmt(top_tokens(org.model, tok, sae.w_dec[s["feature"]].detach(), k=3, ranking="cossim")),
                       "lens bottom (cosine)": fmt(top_tokens(org.model, tok, sae.w_dec[s["feature"]].detach(), k=3, ranking="cossim", bottom=True))}
                      for s in top]).set_index("feature")
table

# %% [markdown]
# Where the top feature is most active: the tokens with its largest activations, with a few tokens of
# context before them, and whether that generation was correct.

# %%
f0 = top[0]["feature"]
hits = []
for b, x in enumerate(diffs.per_seq):
    acts = sae.encode(x)[:, f0].detach()
    ids = diffs.forced.ids[b][diffs.forced.mask[b].bool()].tolist()
    for t in acts.nonzero().flatten().tolist():
        hits.append((float(acts[t]), b, t, ids))
hits.sort(key=lambda h: -h[0])
pd.DataFrame([{"activation": a, "context": tok.decode(ids[max(0, t - 6):t]), "token": tok.decode([ids[t]]),
               "position": "prompt" if t < diffs.forced.prompt_len[b] else "completion", "correct": diffs.correct[b]}
              for a, b, t, ids in hits[:10]])

# %% [markdown]
# ## How much of the vector's effect do the top features carry?
# The read-out layer's difference replaced by its reconstruction from the top features, from every
# feature (the SAE's own quality), and from random sets of the same size (mean of five draws).

# %%
top_ids = [s["feature"] for s in stats[:top_n]]
share_top = explained_share(org.model, sae, diffs, v, RL, top_ids)
share_all = explained_share(org.model, sae, diffs, v, RL, None)
rng = np.random.default_rng(seed)
share_rand = float(np.mean([explained_share(org.model, sae, diffs, v, RL, rng.choice(n_features, top_n, replace=False).tolist())
                            for _ in range(5)]))
freq = (torch.stack([(sae.encode(x) > 0).any(0) for x in diffs.per_seq]).float().mean(0))
most_frequent = freq.argsort(descending=True)[:top_n].tolist()
share_freq = explained_share(org.model, sae, diffs, v, RL, most_frequent)
shares = {f"top {top_n} by correct-incorrect difference": share_top, f"{top_n} most frequent": share_freq,
          f"{top_n} random (mean of 5)": share_rand, f"all {n_features} features": share_all}
fig = plots.bars(shares, f"Share of the vector's next-token KL carried by SAE features ({P.name})",
                 ylabel="1 − KL(steered‖patched) / KL(steered‖base)", ylim=None, rotate=True)
glue("fig_shares", fig, display=False)
fig

# %%
results = {
    "preset": P.name,
    "vector_layer": VL,
    "read_layer": RL,
    "rollouts": len(diffs.per_seq),
    "correct_rollouts": n_correct,
    "n_features": n_features,
    "k": k,
    "final_fvu": hist["fvu"][-1],
    "top_feature": f0,
    "top_feature_correct_rate": top[0]["correct_rate"],
    "top_feature_incorrect_rate": top[0]["incorrect_rate"],
    "top_features": top,
    "explained_share": share_top,
    "explained_share_all_features": share_all,
    "explained_share_random": share_rand,
    "explained_share_most_frequent": share_freq,
}
results = json.loads(json.dumps(results).replace("NaN", "null"))
write_results(results_path, results)
alive = int((freq > 0).sum())
for key, value in {"vl": VL, "rl": RL, "n_roll": len(diffs.per_seq), "n_correct": n_correct, "f0": f0,
                   "f0_c": top[0]["correct_rate"], "f0_i": top[0]["incorrect_rate"],
                   "f0_dir": "correct" if top[0]["difference"] > 0 else "incorrect",
                   "share_top": share_top, "share_all": share_all, "share_rand": share_rand, "share_freq": share_freq,
                   "top_n": top_n, "fvu": hist["fvu"][-1], "alive": alive, "n_features": n_features}.items():
    glue(key, value, display=False)
print(json.dumps({k_: v_ for k_, v_ in results.items() if k_ != "top_features"}, indent=1))

# %% [markdown]
# ## What we found
#
# On {glue:text}`n_roll` rollouts ({glue:text}`n_correct` correct) with the vector of layer
# {glue:text}`vl`, read after layer {glue:text}`rl`, the SAE leaves {glue:text}`fvu:.3f` of the variance
# unexplained with {glue:text}`alive` of {glue:text}`n_features` features ever active. The feature that
# best separates the outcomes, feature {glue:text}`f0`, is associated with **{glue:text}`f0_dir`**
# generations: it fires on {glue:text}`f0_c:.2f` of the correct and {glue:text}`f0_i:.2f` of the
# incorrect ones. The top {glue:text}`top_n` features by that difference carry a share
# {glue:text}`share_top:.2f` of the vector's effect on next-token predictions, the
# {glue:text}`top_n` most frequent features {glue:text}`share_freq:.2f`, random sets
# {glue:text}`share_rand:.2f`, all features {glue:text}`share_all:.2f`.
#
# | | paper | this run (organism) |
# | --- | --- | --- |
# | top feature by correct-vs-incorrect firing | one looked associated with incorrectness | the direction above |
# | share of correct generations activating it | about half (layer 10) | the rate above |
# | share of the effect the top features explain | not published | the shares above |
