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
# # Training one steering vector with RLOO
#
# The paper trains a single zero-initialised vector $s_l$, added to the residual stream after decoder
# layer $l$ of a frozen model, with RLOO policy gradient {cite:p}`ahmadian2024back,kool2019buy` on
# problems whose answers Math-Verify checks {cite:p}`mathverify`, and reports that even one layer's
# vector recovers a large part of what full RL fine-tuning gains {cite:p}`sinii2025small`. This chapter
# trains one such vector (by default at the last layer), follows reward, $|s|$, the first generated
# token and completion length over the steps, and compares held-out pass@1 before and after.
#
# The recipe is the authors' (PAPER.md §1b): $K$ samples per prompt at $\tau = 1$, reward 1/0,
# advantage $A_i = r_i - \frac{1}{K-1}\sum_{j \neq i} r_j$, loss $-\sum_i A_i \sum_t \log \pi(y_t)$
# divided by the batch's completion-token count, Adam, gradient-norm clip 2. The paper picks the best of
# five checkpoints by the *test* benchmarks; here the best snapshot is chosen on a **validation split
# disjoint from the test problems**.

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
run_dir: str = "runs/organism"  # where runs, vectors and evaluations are kept - resumed if present
layer: Optional[int] = None  # layer to steer - None: the last layer
steps: Optional[int] = None  # RLOO steps - None: the preset's
lr: Optional[float] = None  # learning rate - None: the preset's per-layer table
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing the best snapshot
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
results_path: str = "book/results/01_training.json"  # headline numbers - JSON

# %%
from pathlib import Path

import pandas as pd
from myst_nb import glue

from steerlib import plots
from steerlib.organism_checks import write_results
from steerlib.presets import load_model, resolve_preset
from steerlib.sweep import evaluate_vector_files, select_best, train_vectors

P = resolve_preset(preset, layer=layer, steps=steps, model=model, eval_problems=eval_problems, seed=seed,
                   prompts_per_step=prompts_per_step, max_new_tokens=max_new_tokens)
LAYER = P.default_layer
RUN = Path(run_dir)
org = load_model(P)
print(f"preset {P.name}: {P.n_layers} layers, steering layer {LAYER}, lr {lr or P.lr_for(LAYER)}, "
      f"{P.prompts_per_step} prompts x {P.completions_per_prompt} completions, {P.steps} steps")

# %% [markdown]
# ## Training
# The run is checkpointed in the run directory and resumed if it was interrupted; snapshots of the
# vector are kept at the preset's checkpoint steps.

# %%
result = train_vectors(org, P, [LAYER], RUN / f"single-layer-{LAYER}", lr=lr)
metrics = result.metrics
fig = plots.training_curves(metrics, f"RLOO on a layer-{LAYER} vector ({P.name})")
glue("fig_training", fig, display=False)
fig

# %% [markdown]
# ## Held-out pass@1 before and after
# The best snapshot on the validation split is evaluated on the test split together with the base
# model (one routed batch: each row carries either no vector or the trained one).

# %%
best = select_best(org, P, {"vector": result.snapshots}, n_problems=val_problems)["vector"]
evals = evaluate_vector_files(org, P, {"steered": result.snapshots[best[0]]})
base, steered = evals["base"], evals["steered"]
opener = " Step" if P.train_source == "organism" else " To"
table = pd.DataFrame({
    "pass@1": [base.pass_at_1, steered.pass_at_1],
    "stderr": [base.stderr, steered.stderr],
    f"first token '{opener.strip()}'": [base.first_token_share(opener), steered.first_token_share(opener)],
    "mean length": [base.mean_length, steered.mean_length],
}, index=["base", f"vector at layer {LAYER} (step {best[0]})"])
train_seconds = result.train_seconds
table

# %%
fig = plots.mode_shares(["base", f"+ s{LAYER}"], [base.pass_at_1, steered.pass_at_1],
                        [base.stderr, steered.stderr], title="Held-out pass@1 (τ = 1)")
glue("fig_before_after", fig, display=False)
shares = {"base": dict(base.top_first_tokens(4)), f"+ s{LAYER}": dict(steered.top_first_tokens(4))}
fig2 = plots.first_token_bars(shares)
fig2

# %% [markdown]
# ## The vector as a PEFT adapter
# A `resid_post` vector is a bias on layer $l$'s `mlp.down_proj`; exported as a rank-1 LoRA with a zero
# `B` matrix and `B`'s bias set to $s$, it serves without steerlib. The adapter's logits are compared
# with the hook's.

# %%
import torch
from peft import PeftModel

from steerlib.steering import steer
from steerlib.vectorfile import export_peft, load_vectors

vec = load_vectors(result.snapshots[best[0]], org.model).vectors[0]
adapter = export_peft(vec, org.model, RUN / f"single-layer-{LAYER}" / "peft-adapter")
ids = org.tokenizer(["Q: 347+862+519=?\nA:" if P.train_source == "organism" else "1+1="],
                    return_tensors="pt", add_special_tokens=False)["input_ids"].to(org.model.device)
with torch.no_grad(), steer(org.model, vec):
    hook_logits = org.model(ids).logits
import copy

peft_model = PeftModel.from_pretrained(copy.deepcopy(org.model), str(adapter)).eval()
with torch.no_grad():
    peft_logits = peft_model(input_ids=ids).logits
peft_max_diff = float((hook_logits - peft_logits).abs().max())
print(f"max |logits(hook) - logits(PEFT adapter)| = {peft_max_diff:.2e}")

# %% [markdown]
# The same held-out sampling (same prompts, batches and seed) through the hook and through the adapter:

# %%
from steerlib.evaluate import evaluate
from steerlib.sweep import split_prompts

test_prompts, test_answers = split_prompts(P, org.tokenizer, "test", P.eval_problems)
via_hook = evaluate(org.model, org.tokenizer, test_prompts, test_answers, vectors=[vec],
                    max_new_tokens=P.max_new_tokens)
via_peft = evaluate(peft_model, org.tokenizer, test_prompts, test_answers, max_new_tokens=P.max_new_tokens)
same = sum(a.text == b.text for a, b in zip(via_hook.completions, via_peft.completions)) / len(via_hook.completions)
print(f"pass@1 through the hook {via_hook.pass_at_1:.3f}, through the PEFT adapter {via_peft.pass_at_1:.3f}; "
      f"identical completions: {same:.3f}")

# %%
results = {
    "preset": P.name,
    "layer": LAYER,
    "base_pass_at_1": base.pass_at_1,
    "base_stderr": base.stderr,
    "steered_pass_at_1": steered.pass_at_1,
    "steered_stderr": steered.stderr,
    "gain": steered.pass_at_1 - base.pass_at_1,
    "best_step": best[0],
    "validation_pass_at_1": best[1],
    "base_opener_share": base.first_token_share(opener),
    "steered_opener_share": steered.first_token_share(opener),
    "vector_norm": float(vec.vector.norm()),
    "train_seconds": train_seconds,
    "median_step_seconds": result.median_step_seconds,
    "steps": P.steps,
    "n_test_samples": len(base.completions),
    "peft_max_logit_diff": peft_max_diff,
    "hook_pass_at_1": via_hook.pass_at_1,
    "peft_pass_at_1": via_peft.pass_at_1,
    "peft_identical_completions": same,
}
write_results(results_path, results)
for key in ("base_pass_at_1", "steered_pass_at_1", "gain", "train_seconds", "base_opener_share",
            "steered_opener_share", "vector_norm", "best_step", "peft_max_logit_diff", "hook_pass_at_1",
            "peft_pass_at_1", "peft_identical_completions"):
    glue(key, results[key], display=False)
glue("layer", LAYER, display=False)
pd.Series(results).to_frame("value")

# %% [markdown]
# ## What we found
#
# A vector at layer {glue:text}`layer` trained for {glue:text}`train_seconds:.0f` s moved held-out
# pass@1 from {glue:text}`base_pass_at_1:.3f` to {glue:text}`steered_pass_at_1:.3f`
# ({glue:text}`gain:+.3f`); the share of samples opening with the worked-solution opener went from
# {glue:text}`base_opener_share:.2f` to {glue:text}`steered_opener_share:.2f`, and $|s|$ ended at
# {glue:text}`vector_norm:.1f`. Exported as a PEFT adapter, the vector gives the same logits as the
# hook up to {glue:text}`peft_max_logit_diff:.1e` (float rounding of a bias added at a different point
# of the same sum); sampled with the same seed, the hook gives pass@1 {glue:text}`hook_pass_at_1:.3f`
# and the adapter {glue:text}`peft_pass_at_1:.3f`, with {glue:text}`peft_identical_completions:.3f` of
# the completions identical. (The train time includes a stretch where another CPU-heavy process
# shared the two cores; the uncontended rate is about 1.3 s per step.)
#
# | | paper (Qwen2.5-Math-7B, DeepScaleR) | this run (organism) |
# | --- | --- | --- |
# | a single-layer vector improves accuracy | yes, at all but two layers | see the numbers above |
# | the last-layer vector switches the first token | boosts "To" / "Step" | the opener share above |
#
# On the organism the gain comes from switching the answer mode: the worked mode is nearly always
# right and the direct mode nearly always wrong (chapter 00), so a vector that makes " Step" the first
# token buys almost the whole gap. Chapter 04 asks whether that is *all* the vector does.
