# %% [markdown]
# # 05 · The penultimate layer's vector: attention or MLP?
#
# For the vector of the penultimate layer, $s_{L-1}$, the paper finds that attention patterns barely
# change and that the effect runs through the last block's MLP and the unembedding
# {cite:p}`sinii2025small`: moving the vector past the last block's attention (**Skip-Attn**, the
# attention never sees it) keeps more than half of its gain. In Qwen, injecting it into the value
# projection of a single KV group of the last block recovers the whole effect (a constant added to every
# value vector passes through any attention pattern unchanged, so it acts like a fixed vector added
# after attention); in Llama no single head suffices. Two Qwen layers whose vectors fail are blamed on
# the next block's input norm shrinking the vector ("norm attenuation").
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
# Head patching follows the authors' patched last layer (the paper, Section 7 and Figure 5; {doc}`notes on their code <../appendix_authors_code>`): the vector never enters the
# residual stream; inside the last block a vanilla attention pass reads $\mathrm{norm}(h)$, a steered
# one $\mathrm{norm}(h + s)$, and the attention output is mixed per query head (**Steer-Head**: only this
# head steered; **Skip-Head**: all but this head) or the steered input is fed to only the q, k or v
# projection of one KV group. The attention-pattern change is measured as the Jensen-Shannon divergence
# per head between steered and unsteered attention (our choice: the paper reports no number).
#
# The vectors studied here are chapter 02's sweep of its first training seed; Skip-Attn, Skip-Layer,
# MLP-only and the value-projection patch are measured again on every training seed's vector ("Every
# training seed" below), and a verdict on the claims page stands only where all seeds agree.

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
n_seeds: int = 3  # training seeds whose penultimate vectors are moved too (chapter 02's sweeps of seed, seed + 1, ...)
run_dir: Optional[str] = None  # shared with chapters 01-04 (sweep vectors reused) - None: runs/<preset>
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
completions_per_prompt: Optional[int] = None  # samples per prompt, RLOO's group - None: the preset's (paper: 8)
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
layer: Optional[int] = None  # the vector studied - None: the penultimate layer
js_prompts: int = 64  # prompts for the attention-pattern change
where_to_add: bool = True  # retrain the weakest layer's vector after its attention instead
max_hours: float = 2.0  # refuse to start when the cost plan exceeds this (hours on this device)
results_path: str = "book/results/05_attention_ablation.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from steerlib import ablation, plots
from steerlib.chapter import setup
from steerlib.evaluate import summary_table
from steerlib.lens import lens_table
from steerlib.preset_eval import route_estimates, route_shares
from steerlib.seeds import seed_list
from steerlib.selection import post_attn_runs
from steerlib.traces import sample_forced
from steerlib.stats import describe, gain_share, paired_gain

ch = setup("05_attention_ablation", globals(), positive=("js_prompts", "n_seeds"))
PEN = ch.P.n_layers - 2 if layer is None else layer
if not 0 <= PEN < ch.P.n_layers - 1:
    raise ValueError(f"layer must lie in 0..{ch.P.n_layers - 2}: the analysis moves the vector past layer + 1")
NEXT, LAST, LAYERS, vecs = PEN + 1, ch.P.n_layers - 1, list(range(ch.P.n_layers)), ch.vectors  # chapter 02's sweep
s = vecs[PEN]

# %% [markdown]
# ## Skip-Attn, Skip-Layer and MLP-only
# The same trained vector, added after the next block's attention (Skip-Attn), after the whole next
# block (Skip-Layer) or to the next block's MLP input alone (MLP-only: the MLP sees it, the residual
# stream does not) instead of after its own block. Gain share = (acc − base) / (acc of the vector in
# place − base).

# %% tags=["hide-input"]
prompts, answers = ch.prompts()
ev = ch.evaluate({"base": [], "in place": [s], "Skip-Attn": [ablation.skip_attn(s)],
                  "Skip-Layer": [ablation.skip_layer(s)], "MLP-only": [ablation.mlp_only(s)],
                  f"s_{LAST} (last layer's own)": [vecs[LAST]]})
base_acc, full_acc = ev["base"].pass_at_1, ev["in place"].pass_at_1
ch.table(summary_table(ev, gain_from=(base_acc, full_acc)))

# %% [markdown]
# ## Does the vector change attention patterns?
# JS divergence (nats; at most ln 2 ≈ 0.69) between each head's attention distribution with and
# without the vector, averaged over the query tokens of completions sampled with the vector. As a
# yardstick, a random direction of the same norm.
# {numref}`fig-05-js` shows the divergence per head.

# %% tags=["hide-input"]
forced = sample_forced(ch.model, ch.tok, prompts[:js_prompts], [s], max_new_tokens=ch.P.max_new_tokens, seed=seed)
later = list(range(NEXT, ch.P.n_layers))
js = ablation.attention_js(ch.model, forced, [s], later)
js_rand = ablation.attention_js(ch.model, forced, [ablation.random_like(s, seed)], later)
grids = {f"trained s_{PEN}": np.array([js[l] for l in later]),
         "random direction, same norm": np.array([js_rand[l] for l in later])}
ch.figure("fig_js", plots.heatmaps(grids, f"Attention-pattern change per head ({ch.P.name})", xlabel="query head",
                                   ylabel="layer", yticks=later, vmin=0, cmap="rocket_r", fmt=".3f",
                                   vmax=float(max(g.max() for g in grids.values()))))

# %% [markdown]
# ```{glue:figure} fig_js
# :name: fig-05-js
#
# Jensen-Shannon divergence (nats) between each query head's attention with and without the vector,
# in every block after it (rows), for the trained vector and for a random direction of the same norm.
# ```

# %% [markdown]
# ## Head and projection patching in the next block
# Each row is one patched configuration, evaluated on the same held-out problems; the reference lines
# are the vector in place, Skip-Attn and Skip-Layer.
# {numref}`fig-05-heads` shows every configuration.

# %% tags=["hide-input"]
head_ev = ablation.evaluate_patches(ch.model, ch.tok, prompts, answers, s.vector, NEXT,
                                    ablation.head_patch_specs(ch.model), max_new_tokens=ch.P.max_new_tokens, seed=seed)
ch.figure("fig_heads", plots.bars({k: r.pass_at_1 for k, r in head_ev.items()},
                                  f"Patching s_{PEN} into block {NEXT}'s attention ({ch.P.name})",
                                  ylabel="pass@1 (τ = 1, held-out)", errors={k: r.stderr for k, r in head_ev.items()},
                                  lines={f"s_{PEN} in place": full_acc, "Skip-Attn": ev["Skip-Attn"].pass_at_1,
                                         "Skip-Layer": ev["Skip-Layer"].pass_at_1, "base": base_acc}))
ch.table(summary_table(head_ev, gain_from=(base_acc, full_acc)))

# %% [markdown]
# ```{glue:figure} fig_heads
# :name: fig-05-heads
#
# Head and projection patching in the next block (the paper's Figure 5 on the organism): held-out
# pass@1 with the vector fed only to one query head (Steer-Head), to all but one (Skip-Head), or only to
# one KV group's q, k or v projection; vertical lines mark the vector in place, Skip-Attn, Skip-Layer and
# the base model; bars are standard errors.
# ```

# %% [markdown]
# ## Every training seed
# The share of the gain kept by Skip-Attn, Skip-Layer, MLP-only and the value projections of every KV group
# (rows), for the penultimate vector of each training seed's sweep (columns; chapter 02): the first seed's
# from the evaluations above, each other seed in evaluations of its own. The claims page reads the first
# seed's shares; a verdict stands only where every seed's share gives the same verdict (else "unstable").

# %% tags=["hide-input"]
SEEDS = seed_list(ch.P.seed, n_seeds)
per_seed = {ch.P.seed: route_estimates({**ev, **head_ev}),  # bootstrap over problems
            **{s: route_shares(ch.org, ch.P, v[PEN], NEXT) for s, v in ch.seed_vectors(SEEDS[1:]).items()}}
ch.table(pd.DataFrame({f"seed {s}": {k: str(e) for k, e in r.items()} for s, r in per_seed.items()}))

# %% [markdown]
# ## What the next MLP writes
# The mean change of the next block's MLP output at completion tokens when the vector is added in
# place, read through the lens, beside the lens of the vector itself (its direct path to the
# unembedding).

# %% tags=["hide-input"]
mlp = ablation.mlp_shift(ch.model, forced, [s], NEXT)
ch.table(pd.DataFrame(lens_table(ch.model, ch.tok, {f"mean ΔMLP_{NEXT} output": mlp, f"s_{PEN} itself": s.vector}, k=5,
                                 columns=("top by probability", "bottom by cosine"))).set_index("direction"), 2)

# %% [markdown]
# ## Norm attenuation
# Each layer's vector against the residual stream it is added to, before and after the next norm
# (the next block's input norm, or the final norm): raw $|s|/|h|$ and effective
# $|N(h+s) - N(h)| / |N(h)|$, averaged over the tokens of unsteered completions; beside each layer's
# validation accuracy from the sweep.

# %% tags=["hide-input"]
base_forced = sample_forced(ch.model, ch.tok, prompts[:js_prompts], max_new_tokens=ch.P.max_new_tokens, seed=seed)
att = ablation.norm_attenuation(ch.model, base_forced, vecs)
val = {l: c.validation_pass_at_1 for l, c in ch.sweep.choices.items()}
ch.table(pd.DataFrame({l: {**a, "validation pass@1": val[l]} for l, a in att.items()}).T.rename_axis("layer"))

# %% [markdown]
# Where to add: the layer whose vector did worst on validation is retrained with the vector added
# after that block's attention (before its MLP) instead of after the block, at the preset's learning
# rate and at a tenth of it (the residual stream is smaller inside a block than after it, so the same
# Adam step is a larger relative change there), then all are evaluated, with the residual norms at
# both sites.

# %% tags=["hide-input"]
weak = min(val, key=val.get)
norms = ablation.site_norms(ch.model, base_forced, weak)
moved = post_attn_runs(ch.org, ch.P, weak, ch.layout, val_problems=val_problems) if where_to_add else {}
where = ch.evaluate({"base": [], f"after block {weak} (default)": [vecs[weak]],
                     **{f"after block {weak}'s attention, {k}": r.vectors for k, r in moved.items()}})
where_runs = {k: {**r.summary(), "pass_at_1": where[f"after block {weak}'s attention, {k}"].pass_at_1}
              for k, r in moved.items()}
ch.table(pd.concat([summary_table(where), pd.Series(norms, name="mean residual norm").to_frame()]))

# %% tags=["remove-cell"]
singles = {k: r.pass_at_1 for k, r in head_ev.items() if k.startswith(("Steer-", "q-", "k-", "v-only, group"))}
best_single = max(singles, key=singles.get)
share = {k: gain_share(r.pass_at_1, base_acc, full_acc) for k, r in {**ev, **head_ev}.items()}
ratios = [a["ratio"] for a in att.values()]
first = per_seed[ch.P.seed]
results = ch.publish({
    "layer": PEN, "seeds": SEEDS, "patched_block": NEXT, "base_pass_at_1": base_acc, "in_place_pass_at_1": full_acc,
    "skip_attn_pass_at_1": ev["Skip-Attn"].pass_at_1, "skip_layer_pass_at_1": ev["Skip-Layer"].pass_at_1,
    "skip_attn_gain_share": share["Skip-Attn"], "skip_layer_gain_share": share["Skip-Layer"],
    "skip_attn_gain_share_se": first["Skip-Attn"].se, "skip_layer_gain_share_se": first["Skip-Layer"].se,
    "mlp_only_gain_share": share["MLP-only"], "mlp_only_gain_share_se": first["MLP-only"].se,
    "v_only_gain_share": share["v-only, all groups"], "v_only_gain_share_se": first["v-only, all groups"].se,
    "head_patching": {k: {"pass_at_1": r.pass_at_1, "stderr": r.stderr, "gain_share": share[k]}
                      for k, r in head_ev.items()},
    "best_single_head": best_single, "best_single_head_gain_share": share[best_single],
    "best_single_head_stderr": head_ev[best_single].stderr,
    "best_single_head_minus_base_se": paired_gain(head_ev[best_single], ev["base"]).se,
    "attention_js": {str(l): js[l] for l in later}, "attention_js_random": {str(l): js_rand[l] for l in later},
    "norm_attenuation": att, "where_to_add": {k: v.pass_at_1 for k, v in where.items()},
    "where_to_add_runs": where_runs, "site_norms": norms, "weakest_layer": weak,
    "route_shares_per_seed": per_seed,
}, attn_only_share=share["all heads (attention path only)"], js_mean=float(np.mean(list(js.values()))),
   best_head_note=describe(paired_gain(head_ev[best_single], ev["base"])),
   js_rand_mean=float(np.mean(list(js_rand.values()))), weak_ratio=att[weak]["ratio"], ratio_min=min(ratios),
   ratio_max=max(ratios), norm_post_attn=norms["post_attn"], norm_resid_post=norms["resid_post"],
   in_place_weak=where[f"after block {weak} (default)"].pass_at_1,
   where_note="; ".join(f"after its attention at {k}: {r['pass_at_1']:.3f}" + (
       " (the training reward fell to zero and never recovered: with every sample wrong, RLOO has no signal left)"
       if r["min_reward"] == 0 else "") for k, r in where_runs.items()) or "not run")
ch.claims(results)

# %% [markdown]
# ## What we found
#
# The vector of layer {glue:text}`layer` lifts pass@1 from {glue:text}`base_pass_at_1:.3f` to
# {glue:text}`in_place_pass_at_1:.3f`. Skip-Attn keeps {glue:text}`skip_attn_gain_share:.2f` ±
# {glue:text}`skip_attn_gain_share_se:.2f` of that gain (bootstrap over problems), Skip-Layer
# {glue:text}`skip_layer_gain_share:.2f` ± {glue:text}`skip_layer_gain_share_se:.2f`, MLP-only
# {glue:text}`mlp_only_gain_share:.2f` ± {glue:text}`mlp_only_gain_share_se:.2f` and the value projections of
# every KV group {glue:text}`v_only_gain_share:.2f` ± {glue:text}`v_only_gain_share_se:.2f`; the attention path alone (block
# {glue:text}`patched_block`'s heads steered, the stream not) {glue:text}`attn_only_share:.2f`. The largest
# share of one head, group or projection is {glue:text}`best_single_head_gain_share:.2f`
# ({glue:text}`best_single_head`, the largest of many: against the base model, paired over problems,
# {glue:text}`best_head_note`). Attention JS divergence: {glue:text}`js_mean:.4f` nats, random direction {glue:text}`js_rand_mean:.4f`.
# The next norm scales the vectors by {glue:text}`ratio_min:.2f`-{glue:text}`ratio_max:.2f` (weakest
# layer {glue:text}`weakest_layer`: {glue:text}`weak_ratio:.2f`). Where to add there (in place
# {glue:text}`in_place_weak:.3f`): {glue:text}`where_note`; mean residual norm {glue:text}`norm_post_attn:.1f`
# after the attention, {glue:text}`norm_resid_post:.1f` after the block.
#
# How to read the two shares together, fixed before the run: Skip-Attn lets the last block's MLP and the
# unembedding see the vector, Skip-Layer only the unembedding (through the final norm). If the MLP carries
# the effect, as the paper reads it, Skip-Layer keeps clearly less than Skip-Attn; if Skip-Layer keeps as
# much, the vector acts through the direct path to the unembedding and the last block adds nothing.
# MLP-only (written before its run): if the MLP is the route, feeding the vector to the MLP's input alone
# keeps more than half of the gain (interval above 0.5); if it keeps about nothing while Skip-Layer keeps
# everything, the MLP is not the route on this model. The value projections of every KV group at once
# (a constant on every value vector, which passes any attention pattern unchanged) recover the gain if
# the attention output's route carries it: the paper says one group suffices in Qwen.
#
# | | paper (Qwen2.5-Math-7B / Llama-3.1-8B) | {glue:text}`this_run` |
# | --- | --- | --- |
# | Skip-Attn keeps of the gain | more than half | {glue:text}`skip_attn_gain_share:.2f` ± {glue:text}`skip_attn_gain_share_se:.2f` |
# | Skip-Layer keeps of the gain | drawn, not given; under half if the last MLP is "the main contributor" | {glue:text}`skip_layer_gain_share:.2f` ± {glue:text}`skip_layer_gain_share_se:.2f` |
# | MLP-only keeps of the gain | not run; more than half if the effect "runs through the MLP" | {glue:text}`mlp_only_gain_share:.2f` ± {glue:text}`mlp_only_gain_share_se:.2f` |
# | the value projections of every KV group (v-only, all groups) | one group ("V1") recovers the whole gain | {glue:text}`v_only_gain_share:.2f` ± {glue:text}`v_only_gain_share_se:.2f` |
# | attention patterns | largely unchanged | JS {glue:text}`js_mean:.4f` vs random {glue:text}`js_rand_mean:.4f` |
# | one value group recovers the gain | yes in Qwen ("V1"); no single head in Llama | attention path alone {glue:text}`attn_only_share:.2f`, best single {glue:text}`best_single_head_gain_share:.2f` |
# | failing layers | 23, 24: the next norm shrinks the vector | attenuation ratios {glue:text}`ratio_min:.2f`-{glue:text}`ratio_max:.2f` |
