# %% [markdown]
# # 02 · A vector per layer: the layer curve
#
# The paper's Figure 1 trains one vector at each layer alone and plots mean accuracy against the
# layer, next to the base model and full RL fine-tuning {cite:p}`sinii2025small`; "all but two layers"
# improve on the base model, and the two that fail in Qwen2.5-Math-7B (layers 23 and 24) are blamed on
# the next block's input norm shrinking the vector. The precursor paper {cite:p}`sinii2025steering`
# trained a vector at every layer at once (all-layer steering) and compared it with LoRA and full
# fine-tuning. This chapter does all of that on one preset.
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
# The sweep is *multiplexed*: in each RLOO step every layer's vector sees the same prompts (a paired
# comparison across layers), each prompt group is routed to one layer's vector, and advantages, token
# normalisation, gradient clipping and Adam state never mix layers, so each vector gets exactly the
# update a single-layer run would make from the same samples (a unit test checks this). Best snapshots
# are chosen on a validation split disjoint from the test problems. The sweep is trained with several
# training seeds: the curve is their mean, and a measured noise floor (one vector re-evaluated with
# several sampling seeds) says which differences are too small to read. Chapters 03-08 use the first
# seed's vectors.

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
seed: int = 0  # the first training seed (sampling and prompt order); later chapters use this seed's sweep
n_seeds: int = 3  # training seeds of the sweep: seed, seed + 1, ...
noise_seeds: int = 4  # extra sampling seeds re-evaluating one vector: the noise floor
run_dir: Optional[str] = None  # where runs are kept, resumed if present - None: runs/<preset>
steps: Optional[int] = None  # RLOO steps per run - None: the preset's
model: Optional[str] = None  # organism name or HF id - None: the preset's
eval_problems: Optional[int] = None  # held-out problems - None: the preset's
val_problems: int = 200  # validation problems for choosing the best snapshot
select_on: str = "validation"  # validation | test - test: the authors' protocol (best checkpoint by the test Average)
prompts_per_step: Optional[int] = None  # prompts per RLOO step - None: the preset's
completions_per_prompt: Optional[int] = None  # samples per prompt, RLOO's group - None: the preset's (paper: 8)
max_new_tokens: Optional[int] = None  # completion budget - None: the preset's
layers: str = "all"  # comma-separated layers of the sweep - all: every layer
sweep_mode: str = "auto"  # auto | multiplexed | sequential - auto: multiplexed when all layers share one lr
baselines: bool = True  # also train all-layer steering, LoRA and full fine-tuning
max_hours: float = 2.0  # refuse to start when the cost plan exceeds this (hours on this device)
results_path: str = "book/results/02_layer_curve.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import pandas as pd
from steerlib import plots
from steerlib.chapter import setup
from statistics import stdev

from steerlib.efficiency import PARAMETERS, efficiency_rows
from steerlib.evaluate import benchmark_table, summary_table
from steerlib.seeds import sampling_spread, seed_list, seed_summary, seeded_sweeps
from steerlib.selection import baselines as train_baselines
from steerlib.selection import evaluate_runs, vector_run
from steerlib.stats import paired_gain

ch = setup("02_layer_curve", globals(), choices={"sweep_mode": ("auto", "multiplexed", "sequential")},
           positive=("n_seeds", "noise_seeds"))
KW = dict(val_problems=val_problems, select_on=select_on)  # how every run chooses its snapshot
LAYERS, LAST, SEEDS = ch.P.parse_layers(layers), ch.P.n_layers - 1, seed_list(ch.P.seed, n_seeds)

# %% [markdown]
# ## The sweep
# One sweep per training seed, trained (or resumed) in the run directory; each layer's best snapshot is
# chosen on validation. The curves are the first seed's.
# {numref}`fig-02-sweep` follows the first seed's sweep.

# %% tags=["hide-input"]
sweeps = seeded_sweeps(ch.org, ch.P, ch.layout, SEEDS, mode=sweep_mode, layers=LAYERS, **KW)
sweep = sweeps[ch.P.seed]
ch.figure("fig_sweep", plots.training_curves(sweep.metrics, f"Layer sweep ({sweep.mode}), {ch.P.name}"))

# %% [markdown]
# ```{glue:figure} fig_sweep
# :name: fig-02-sweep
#
# Training the layer sweep (first seed): mean reward, every layer's vector norm, the worked-opener share
# of first tokens and the mean completion length per step (in a multiplexed sweep each step trains every layer's
# vector on its own share of the prompts).
# ```

# %% [markdown]
# Timing: the first seed's multiplexed sweep against (layers swept) x one single-layer run (chapter 01's, the cheapest
# layer to train, so the ratio overstates the sweep's cost; `benchmarks/bench_sweep.py` compares one
# run per layer at equal work), from median seconds per step. In the published page both runs were timed
# during `make book`, one thread each beside another chapter (01's run beside a pretraining, the sweep
# beside other work), so the ratio mixes two kinds of load; `benchmarks/bench_sweep.py` times both
# alone, side by side.

# %% tags=["hide-input"]
single = vector_run(ch.org, ch.P, [LAST], ch.layout.single_layer(LAST), **KW)
sweep_ratio = sweep.median_step_seconds / (len(LAYERS) * single.median_step_seconds)
ch.table(pd.Series({"sweep, total s": sweep.train_seconds, "single-layer run, total s": single.train_seconds,
                    "sweep, median s/step": sweep.median_step_seconds,
                    "single, median s/step": single.median_step_seconds,
                    "sweep / (n_layers x single)": sweep_ratio}, name="value"), digits=2)

# %% [markdown]
# ## Baselines and held-out pass@1
# All-layer steering, LoRA and full fine-tuning are trained with the same RLOO recipe and chosen on
# validation; then every seed's vector of every layer, all-layer steering and the base model are
# evaluated on the test split in one routed batch, and the two weight baselines on the same problems.
# Per layer: each seed's pass@1, their mean, the standard deviation over seeds and the standard error
# of the mean (which adds each seed's sampling error to the spread, on the wide side with three seeds).
# {numref}`fig-02-layer-curve` draws the curve against the three baselines.

# %% tags=["hide-input"]
runs = train_baselines(ch.org, ch.P, ch.layout, **KW) if baselines else {}
evals = evaluate_runs(ch.org, ch.P, runs, {"base": [], **{f"seed {s} layer {l}": [v] for s, sw in sweeps.items()
                                                            for l, v in sw.vectors.items()}})
per_seed = {s: {l: evals[f"seed {s} layer {l}"].pass_at_1 for l in LAYERS} for s in SEEDS}
curve = seed_summary(per_seed, {s: {l: evals[f"seed {s} layer {l}"].stderr for l in LAYERS} for s in SEEDS})
ch.table(pd.DataFrame({**{f"seed {s}": v for s, v in per_seed.items()}, "mean": curve.mean,
                       "sd over seeds": curve.sd, "se of the mean": curve.se}).rename_axis("layer"))

# %% tags=["hide-input"]
steps_of = {**{f"layer {l}": c.step for l, c in sweep.choices.items()}, **{k: r.step for k, r in runs.items()}}
ch.table(summary_table({k: evals[k] for k in ("base", *runs)}, extra={"best step": steps_of}))

# %% tags=["hide-input"]
bench = benchmark_table({k: evals[k] for k in ("base", f"seed {ch.P.seed} layer {LAST}", *runs)})
None if bench is None else ch.table(bench)  # a hub preset's benchmarks (AVG@n where the paper uses it)

# %% tags=["hide-input"]
lines = {k: evals[k].pass_at_1 for k in ("base", *runs)}
ch.figure("fig_layer_curve", plots.layer_curve(curve.mean, curve.se, lines, per_seed=per_seed,
                                               label=f"single-layer vector, mean of {len(SEEDS)} seeds",
                                               title=f"Single-layer steering vectors ({ch.P.name})"))

# %% [markdown]
# ```{glue:figure} fig_layer_curve
# :name: fig-02-layer-curve
#
# Held-out pass@1 at τ = 1 of a single vector trained at each layer: each training seed (grey points)
# and their mean (standard error of the mean as bars), against the base model, all-layer steering, LoRA
# and full fine-tuning (the paper's Figure 1 on the organism).
# ```

# %% [markdown]
# ## The noise floor
# The first seed's last-layer vector re-evaluated with `noise_seeds` more sampling seeds (same problems,
# same vector): the spread of these numbers is what sampling alone does, and a difference between two
# configurations in this book smaller than about twice it is not an effect.

# %% tags=["hide-input"]
noise = [evals[f"seed {ch.P.seed} layer {LAST}"].pass_at_1,
         *sampling_spread(ch.org, ch.P, {"v": [sweep.vectors[LAST]]}, range(1, 1 + noise_seeds))["v"]]
ch.table(pd.Series({**{f"sampling seed {i}": v for i, v in enumerate(noise)}, "sd": stdev(noise)}, name="pass@1"))

# %% [markdown]
# ## What each method costs
# Trainable parameters, the bytes Adam keeps for them (two float32 moments each) and the median
# seconds per step of the loss and backward pass (generation is the same for every method), for this
# chapter's runs (timed during `make book`, one thread, beside another chapter), beside the precursor paper's table for Qwen2.5-14B {cite:p}`sinii2025steering`.

# %% tags=["hide-input"]
efficiency = efficiency_rows({"single-layer vector": single, **runs})
ch.table(pd.DataFrame(efficiency).T, digits=3)

# %% tags=["remove-cell"]
base = evals["base"]
per_layer, errors = curve.mean, curve.se
helped = {l: per_layer[l] - base.pass_at_1 > 2 * (errors[l] ** 2 + base.stderr ** 2) ** 0.5 for l in LAYERS}
best = max(per_layer, key=per_layer.get)
tied = [l for l in LAYERS if per_layer[best] - per_layer[l] <= 2 * (errors[best] ** 2 + errors[l] ** 2) ** 0.5]
vs_full = paired_gain(evals["all layers"], evals["full fine-tune"]) if baselines else None
results = ch.publish({
    "n_layers": ch.P.n_layers, "seeds": SEEDS, "per_layer_mean": curve.mean, "per_layer_sd": curve.sd,
    "per_layer_per_seed": {str(s): v for s, v in per_seed.items()}, "noise_floor_sd": stdev(noise),
    "noise_floor_values": noise, "efficiency": efficiency,
    "all_layer_minus_full_ft": None if vs_full is None else vs_full.estimate,
    "all_layer_minus_full_ft_se": None if vs_full is None else vs_full.se,
    "per_layer": per_layer, "per_layer_stderr": errors, "base_pass_at_1": base.pass_at_1, "base_stderr": base.stderr,
    "all_layer_pass_at_1": lines.get("all layers"), "lora_pass_at_1": lines.get("LoRA"),
    "full_ft_pass_at_1": lines.get("full fine-tune"), "sweep_mode": sweep.mode, "sweep_seconds": sweep.train_seconds,
    "single_layer_seconds": single.train_seconds, "sweep_median_step_seconds": sweep.median_step_seconds,
    "single_layer_median_step_seconds": single.median_step_seconds, "sweep_vs_n_single": sweep_ratio,
    "best_steps": steps_of, "steps": ch.P.steps, "select_on": select_on,
    "signal_share": {**{f"seed {s} sweep": sw.signal_share for s, sw in sweeps.items()},
                     **{k: r.signal_share for k, r in runs.items()}},
}, best_layer=best, worst_layer=min(per_layer, key=per_layer.get), tied_with_best=", ".join(map(str, tied)),
   best_layer_acc=max(per_layer.values()), worst_layer_acc=min(per_layer.values()),
   best_layer_se=errors[max(per_layer, key=per_layer.get)], base_se=base.stderr,
   all_layer_se=evals["all layers"].stderr if "all layers" in evals else None,
   full_ft_se=evals["full fine-tune"].stderr if "full fine-tune" in evals else None,
   n_helped=sum(helped.values()), n_not_helped=len(LAYERS) - sum(helped.values()), n_swept=len(LAYERS),
   n_seeds=len(SEEDS), max_seed_sd=max(curve.sd.values()),
   vector_params=efficiency["single-layer vector"][PARAMETERS],
   full_params=efficiency.get("full fine-tune", {}).get(PARAMETERS))
ch.claims(results)

# %% [markdown]
# ## What we found
#
# Averaged over {glue:text}`n_seeds` training seeds, {glue:text}`n_helped` of {glue:text}`n_swept`
# single-layer vectors beat the base model ({glue:text}`base_pass_at_1:.3f`) by more than two standard
# errors. The highest is layer {glue:text}`best_layer` ({glue:text}`best_layer_acc:.3f` ±
# {glue:text}`best_layer_se:.3f`), the lowest layer {glue:text}`worst_layer`
# ({glue:text}`worst_layer_acc:.3f`). Layers within two standard errors of the highest, itself
# included: {glue:text}`tied_with_best` (more than one would mean the data do not single out a best layer). Training seeds disagree by up to {glue:text}`max_seed_sd:.3f` (standard deviation
# at one layer); sampling alone moves one vector's pass@1 by {glue:text}`noise_floor_sd:.3f` (the noise
# floor). All-layer steering reached {glue:text}`all_layer_pass_at_1:.3f`, LoRA
# {glue:text}`lora_pass_at_1:.3f` and full fine-tuning {glue:text}`full_ft_pass_at_1:.3f` (all-layer
# minus full fine-tuning, paired: {glue:text}`all_layer_minus_full_ft:+.3f` ±
# {glue:text}`all_layer_minus_full_ft_se:.3f`). The sweep cost {glue:text}`sweep_vs_n_single:.2f` x (layers swept) x
# the last-layer run. Snapshots were chosen on the {glue:text}`select_on` split.
#
# | | paper (Qwen2.5-Math-7B) | {glue:text}`this_run` |
# | --- | --- | --- |
# | single-layer vectors help | all but 2 of 28 layers | {glue:text}`n_helped` of {glue:text}`n_swept` (mean of {glue:text}`n_seeds` seeds) |
# | where the gain is largest | late layers (last, penultimate) | layer {glue:text}`best_layer` ({glue:text}`best_layer_acc:.3f` ± {glue:text}`best_layer_se:.3f`) |
# | layers that fail | 23, 24 (next norm shrinks the vector) | {glue:text}`n_not_helped` of {glue:text}`n_swept` do not beat the base; see chapter 05's norm attenuation |
# | all-layer steering vs full fine-tune | close ("explains a large portion") | difference {glue:text}`all_layer_minus_full_ft:+.3f` ± {glue:text}`all_layer_minus_full_ft_se:.3f` |
# | trainable parameters, vector vs full fine-tune | 245 K vs 14.7 B (Qwen2.5-14B, all layers) | {glue:text}`vector_params:,` vs {glue:text}`full_params:,.0f` (organism, one layer) |
