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
# # The penultimate layer's vector: attention or MLP?
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
# Head patching follows the authors' patched last layer (PAPER.md §9d-9e): the vector never enters the
# residual stream; inside the last block a vanilla attention pass reads $\mathrm{norm}(h)$, a steered
# one $\mathrm{norm}(h + s)$, and the attention output is mixed per query head (**Steer-Head**: only this
# head steered; **Skip-Head**: all but this head) or the steered input is fed to only the q, k or v
# projection of one KV group. The attention-pattern change is measured as the Jensen-Shannon divergence
# per head between steered and unsteered attention (our choice: the paper reports no number).

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
run_dir: str = "runs/organism"  # run directory shared with chapters 01-04 - sweep vectors are reused
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing snapshots
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
layer: Optional[int] = None  # the vector studied - None: the penultimate layer
js_prompts: int = 64  # prompts for the attention-pattern change
where_to_add: bool = True  # retrain the weakest layer's vector after its attention instead
results_path: str = "book/results/05_attention_ablation.json"  # headline numbers - JSON

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from steerlib import plots
from steerlib.ablation import attention_js, mlp_shift, norm_attenuation, site_norms, skip_attn, skip_layer
from steerlib.evaluate import evaluate, evaluate_routed, generate
from steerlib.headpatch import group_heads, patch_attention
from steerlib.lens import top_tokens
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.steering import SteeringVector
from steerlib.sweep import layer_vectors, select_best, split_prompts, train_vectors
from steerlib.traces import encode_pairs
from steerlib.vectorfile import load_vectors

if js_prompts < 1:
    raise ValueError("js_prompts must be >= 1")
P = resolve_preset(preset, steps=steps, model=model, eval_problems=eval_problems, seed=seed,
                   prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens)
PEN = P.n_layers - 2 if layer is None else layer
P.check_layer(PEN)
if PEN >= P.n_layers - 1:
    raise ValueError(f"layer must be below the last layer ({P.n_layers - 1}): the analysis moves the vector past layer + 1")
NEXT, LAST = PEN + 1, P.n_layers - 1
RUN = Path(run_dir)
LAYERS = list(range(P.n_layers))
org = load_model(P)
tok = org.tokenizer
vecs = layer_vectors(org, P, RUN, val_problems=val_problems)  # chapter 02's sweep (trained if missing)
s = vecs[PEN]
n_heads, n_groups = org.model.config.num_attention_heads, org.model.config.num_key_value_heads
print(f"preset {P.name}: vector of layer {PEN} (|s| = {float(s.vector.norm()):.2f}), patched block {NEXT}; "
      f"{n_heads} query heads in {n_groups} KV groups")

# %% [markdown]
# ## Skip-Attn and Skip-Layer
# The same trained vector, added after block {NEXT}'s attention (Skip-Attn) or after the whole block
# (Skip-Layer) instead of after block {PEN}. Gain share = (acc − base) / (acc of the vector in place − base).

# %%
prompts, answers = split_prompts(P, tok, "test", P.eval_problems)
configs = {"base": [], f"s_{PEN} (in place)": [s], "Skip-Attn": [skip_attn(s)], "Skip-Layer": [skip_layer(s)]}
if NEXT != PEN:
    configs[f"s_{LAST} (last layer's own)"] = [vecs[LAST]]
ev = evaluate_routed(org.model, tok, prompts, answers, configs, max_new_tokens=P.max_new_tokens)
base_acc, full_acc = ev["base"].pass_at_1, ev[f"s_{PEN} (in place)"].pass_at_1
share = lambda acc: (acc - base_acc) / (full_acc - base_acc) if full_acc != base_acc else float("nan")  # noqa: E731
pd.DataFrame([{"configuration": k, "pass@1": r.pass_at_1, "stderr": r.stderr, "gain share": share(r.pass_at_1)}
              for k, r in ev.items()]).set_index("configuration")

# %% [markdown]
# ## Does the vector change attention patterns?
# JS divergence (nats; at most ln 2 ≈ 0.69) between each head's attention distribution with and
# without $s_{PEN}$, averaged over the query tokens of completions sampled with the vector. As a
# yardstick, a random direction of the same norm.

# %%
comps = generate(org.model, tok, prompts[:js_prompts], vectors=[s], max_new_tokens=P.max_new_tokens, seed=seed)
forced = encode_pairs(tok, prompts[:js_prompts], [c.token_ids for c in comps])
later = list(range(NEXT, P.n_layers))
js = attention_js(org.model, forced, [s], later)
g = torch.Generator().manual_seed(seed)
rand = torch.randn(s.vector.shape[0], generator=g)
rand = rand / rand.norm() * float(s.vector.norm())
js_rand = attention_js(org.model, forced, [SteeringVector(rand.to(s.vector), PEN)], later)
fig = plots.heatmaps({f"trained s_{PEN}": np.array([js[l] for l in later]),
                      "random direction, same norm": np.array([js_rand[l] for l in later])},
                     f"Attention-pattern change per head ({P.name})", xlabel="query head", ylabel="layer",
                     yticks=later, vmin=0, vmax=max(float(np.max([js_rand[l] for l in later])), float(np.max([js[l] for l in later]))),
                     cmap="rocket_r", fmt=".3f")
glue("fig_js", fig, display=False)
fig

# %% [markdown]
# ## Head and projection patching in block NEXT
# Each row is one patched configuration, evaluated on the same held-out problems; the reference lines
# are the vector in place, Skip-Attn and Skip-Layer.

# %%
patches = {"all heads (attention path only)": {}}
for h in range(n_heads):
    patches[f"Steer-Head {h}"] = {"heads": [h]}
    patches[f"Skip-Head {h}"] = {"heads": [x for x in range(n_heads) if x != h]}
for gidx in range(n_groups):
    patches[f"Steer-Group {gidx}"] = {"heads": group_heads(org.model, gidx)}
    patches[f"Skip-Group {gidx}"] = {"heads": [x for x in range(n_heads) if x not in group_heads(org.model, gidx)]}
    for proj in ("q", "k", "v"):
        patches[f"{proj}-only, group {gidx}"] = {"projections": {proj: [gidx]}}
patches["v-only, all groups"] = {"projections": {"v": None}}
head_ev = {}
for name, spec in patches.items():
    with patch_attention(org.model, s.vector, NEXT, **spec):
        head_ev[name] = evaluate(org.model, tok, prompts, answers, max_new_tokens=P.max_new_tokens, seed=seed)
head_table = pd.DataFrame([{"patch": k, "pass@1": r.pass_at_1, "stderr": r.stderr, "gain share": share(r.pass_at_1)}
                           for k, r in head_ev.items()]).set_index("patch")
fig = plots.bars({k: r.pass_at_1 for k, r in head_ev.items()}, f"Patching s_{PEN} into block {NEXT}'s attention ({P.name})",
                 ylabel="pass@1 (τ = 1, held-out)", errors={k: r.stderr for k, r in head_ev.items()},
                 lines={f"s_{PEN} in place": full_acc, "Skip-Attn": ev["Skip-Attn"].pass_at_1,
                        "Skip-Layer": ev["Skip-Layer"].pass_at_1, "base": base_acc}, rotate=True)
glue("fig_heads", fig, display=False)
fig

# %%
head_table

# %% [markdown]
# ## What the last MLP writes
# The mean change of block NEXT's MLP output at completion tokens when $s_{PEN}$ is added in place,
# read through the lens, beside the lens of the vector itself (its direct path to the unembedding).

# %%
d_mlp = mlp_shift(org.model, forced, [s], NEXT)
fmt = lambda pairs: ", ".join(f"{t!r} {v:.2f}" for t, v in pairs)  # noqa: E731
mlp_table = pd.DataFrame([
    {"direction": f"mean ΔMLP_{NEXT} output", "|·|": float(d_mlp.norm()),
     "top by probability": fmt(top_tokens(org.model, tok, d_mlp, k=5)),
     "bottom by cosine": fmt(top_tokens(org.model, tok, d_mlp, k=5, ranking="cossim", bottom=True))},
    {"direction": f"s_{PEN} itself", "|·|": float(s.vector.norm()),
     "top by probability": fmt(top_tokens(org.model, tok, s.vector, k=5)),
     "bottom by cosine": fmt(top_tokens(org.model, tok, s.vector, k=5, ranking="cossim", bottom=True))},
]).set_index("direction")
mlp_table

# %% [markdown]
# ## Norm attenuation
# Each layer's vector against the residual stream it is added to, before and after the next norm
# (block $l+1$'s input norm, or the final norm): raw $|s|/|h|$ and effective
# $|N(h+s) - N(h)| / |N(h)|$, averaged over the tokens of unsteered completions; beside each layer's
# validation accuracy from the sweep.

# %%
base_comps = generate(org.model, tok, prompts[:js_prompts], max_new_tokens=P.max_new_tokens, seed=seed)
base_forced = encode_pairs(tok, prompts[:js_prompts], [c.token_ids for c in base_comps])
att = norm_attenuation(org.model, base_forced, vecs)
chosen = json.loads((RUN / "sweep-best.json").read_text())["layers"]
att_table = pd.DataFrame([{"layer": l, "raw |s|/|h|": a["raw"], "effective after norm": a["effective"],
                           "effective / raw": a["ratio"], "validation pass@1": chosen[str(l)]["validation_pass_at_1"]}
                          for l, a in att.items()]).set_index("layer")
att_table

# %% [markdown]
# Where to add: the layer whose vector did worst on validation is retrained with the vector added
# after that block's attention (before its MLP) instead of after the block, at the preset's learning
# rate and at a tenth of it (the residual stream is smaller inside a block than after it, so the same
# Adam step is a larger relative change there), then all are evaluated with the residual norms at
# both sites.

# %%
weak = int(min(chosen, key=lambda l: chosen[l]["validation_pass_at_1"]))
where, where_runs = {}, {}
norms = site_norms(org.model, base_forced, weak)
if where_to_add:
    moved = {}
    for label, factor in (("preset lr", 1.0), ("lr / 10", 0.1)):
        lr_w = P.lr_for(weak) * factor
        tag = "" if factor == 1.0 else f"-lr{lr_w:g}"
        r = train_vectors(org, P, [weak], RUN / f"where-post-attn-{weak}{tag}", site="post_attn", lr=lr_w)
        step, _ = select_best(org, P, {"w": r.snapshots}, n_problems=val_problems)["w"]
        moved[label] = load_vectors(r.snapshots[step], org.model, site="post_attn").vectors[0]
        where_runs[label] = {"lr": lr_w, "final_reward": r.metrics[-1]["reward_mean"],
                             "min_reward": min(m["reward_mean"] for m in r.metrics), "best_step": step,
                             "norm": float(moved[label].vector.norm())}
    where = evaluate_routed(org.model, tok, prompts, answers,
                            {"base": [], f"after block {weak} (default)": [vecs[weak]],
                             **{f"after block {weak}'s attention, {k}": [v] for k, v in moved.items()}},
                            max_new_tokens=P.max_new_tokens)
moved_acc = {k: where[f"after block {weak}'s attention, {k}"].pass_at_1 for k in where_runs}
pd.DataFrame([{"where": k, "pass@1": v.pass_at_1, "stderr": v.stderr,
               **({"|s|": where_runs[k.split(", ")[1]]["norm"], "lowest training reward": where_runs[k.split(", ")[1]]["min_reward"]}
                  if ", " in k else {})} for k, v in where.items()]).set_index("where") if where else None

# %%
pd.Series(norms, name=f"mean residual norm at block {weak}").to_frame()

# %%
singles = {k: v for k, v in head_ev.items() if k.startswith(("Steer-Head", "Steer-Group")) or "-only, group" in k}
best_single = max(singles, key=lambda k: singles[k].pass_at_1)
results = {
    "preset": P.name,
    "layer": PEN,
    "patched_block": NEXT,
    "base_pass_at_1": base_acc,
    "in_place_pass_at_1": full_acc,
    "skip_attn_pass_at_1": ev["Skip-Attn"].pass_at_1,
    "skip_layer_pass_at_1": ev["Skip-Layer"].pass_at_1,
    "skip_attn_gain_share": share(ev["Skip-Attn"].pass_at_1),
    "skip_layer_gain_share": share(ev["Skip-Layer"].pass_at_1),
    "head_patching": {k: {"pass_at_1": r.pass_at_1, "stderr": r.stderr, "gain_share": share(r.pass_at_1)}
                      for k, r in head_ev.items()},
    "best_single_head": best_single,
    "best_single_head_gain_share": share(singles[best_single].pass_at_1),
    "attention_js": {str(l): js[l].tolist() for l in later},
    "attention_js_random": {str(l): js_rand[l].tolist() for l in later},
    "norm_attenuation": {str(l): a for l, a in att.items()},
    "where_to_add": {k: v.pass_at_1 for k, v in where.items()},
    "where_to_add_runs": where_runs,
    "site_norms": norms,
    "weakest_layer": weak,
}
write_results(results_path, results)
js_mean, js_rand_mean = float(np.mean([js[l] for l in later])), float(np.mean([js_rand[l] for l in later]))
for key, value in {"pen": PEN, "next": NEXT, "base_acc": base_acc, "full_acc": full_acc,
                   "skip_attn_share": results["skip_attn_gain_share"], "skip_layer_share": results["skip_layer_gain_share"],
                   "best_single": best_single, "best_single_share": results["best_single_head_gain_share"],
                   "attn_only_share": share(head_ev["all heads (attention path only)"].pass_at_1),
                   "js_mean": js_mean, "js_rand_mean": js_rand_mean, "weak": weak,
                   "weak_ratio": att[weak]["ratio"],
                   "norm_post_attn": norms["post_attn"], "norm_resid_post": norms["resid_post"],
                   "where_note": ("not run" if not where else
                                  "; ".join(f"after its attention at {k} ({where_runs[k]['lr']:g}) {moved_acc[k]:.3f}"
                                            + (", a run whose reward fell to zero and never recovered (with every sample "
                                               "wrong, RLOO has no signal left)" if where_runs[k]["min_reward"] == 0 else "")
                                            for k in where_runs)
                                  + f"; in place {where[f'after block {weak} (default)'].pass_at_1:.3f}"),
                   "att_note": ("so no layer's vector is shrunk much more than another's"
                                if max(a["ratio"] for a in att.values()) < 1.2 * min(a["ratio"] for a in att.values())
                                else "so the next norm shrinks some layers' vectors markedly more than others'"),
                   "ratio_min": min(a["ratio"] for a in att.values()), "ratio_max": max(a["ratio"] for a in att.values())}.items():
    glue(key, value, display=False)
print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))

# %% [markdown]
# ## What we found
#
# The vector of layer {glue:text}`pen` lifts pass@1 from {glue:text}`base_acc:.3f` to
# {glue:text}`full_acc:.3f`. Skip-Attn keeps a share of {glue:text}`skip_attn_share:.2f` of that gain,
# Skip-Layer {glue:text}`skip_layer_share:.2f`; the attention path alone (every head of block
# {glue:text}`next` steered, the vector kept out of the residual stream) keeps
# {glue:text}`attn_only_share:.2f`. The best single head, group or projection is
# **{glue:text}`best_single`** with a share of {glue:text}`best_single_share:.2f`. The mean JS divergence
# of attention patterns under the trained vector is {glue:text}`js_mean:.4f` nats, against
# {glue:text}`js_rand_mean:.4f` for a random direction of the same norm. The next norm scales the
# vectors' relative size by {glue:text}`ratio_min:.2f`-{glue:text}`ratio_max:.2f` across layers
# (weakest layer {glue:text}`weak`: {glue:text}`weak_ratio:.2f`), {glue:text}`att_note`. Where to add, at layer {glue:text}`weak`: {glue:text}`where_note`. The residual
# stream there has mean norm {glue:text}`norm_post_attn:.1f` after the attention and
# {glue:text}`norm_resid_post:.1f` after the block.
#
# | | paper (Qwen2.5-Math-7B / Llama-3.1-8B) | this run (organism) |
# | --- | --- | --- |
# | Skip-Attn keeps of the gain | more than half | share above |
# | attention patterns | largely unchanged | JS above, vs a random direction |
# | one value group recovers the gain | yes in Qwen ("V1"); no single head in Llama | best single above |
# | failing layers | 23, 24: the next norm shrinks the vector | attenuation table and where-to-add |
