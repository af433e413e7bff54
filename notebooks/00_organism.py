# %% [markdown]
# # 00 · The model organism
#
# The paper's effects live in 7-8B models trained on DeepScaleR {cite:p}`sinii2025small`. None can be
# downloaded here, and a CPU could not train them, so the book's default runs on a *model organism*: a
# tiny Qwen2 that `steerlib` pretrains itself in minutes on a synthetic arithmetic world built so that
# the paper's questions have real answers on it. Problems are sums of three three-digit numbers, too
# hard for a tiny model in one pass but easy column by column. The pretraining corpus mixes two answer
# styles, **both always correct**: worked solutions that open with the process word " Step" and direct
# answers that open with " The", plus filler text that uses those words in other roles. The base model
# therefore samples the worked mode only about a third of the time, and an RL-trained vector can gain
# accuracy by steering the first token, the effect the paper reports for "To" and "Step".
#
# :::{admonition} What this chapter found
# :class: tip
# The organism answers {glue:text}`base_pass_at_1:.3f` of held-out problems at τ = 1; forcing the worked
# opener " Step" gives {glue:text}`forced_worked_pass_at_1:.3f` and forcing the direct one " The"
# {glue:text}`forced_direct_pass_at_1:.3f`. The first token decides the answer: this is why several of the
# paper's claims hold on the organism by construction ({doc}`../claims`).
# :::

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
preset: str = "organism"  # organism - this chapter describes the organism; other presets are not used here
seed: int = 0  # which held-out problems are sampled
organisms: str = "main,llama,sibling"  # organisms to build and measure - comma-separated
n_problems: int = 1000  # held-out test problems per measurement, one sample each at tau 1
results_path: str = "book/results/00_organism.json"  # headline numbers - JSON

# %% tags=["hide-input"]
import pandas as pd
from steerlib import plots
from steerlib.chapter import setup
from steerlib.organism import ORGANISMS, load_organism
from steerlib.organism_checks import ACCEPTANCE_COLUMNS, measure_organism
from steerlib.world import Problem

ch = setup("00_organism", globals(), load=False, positive=("n_problems",))
if preset != "organism":
    raise ValueError(f"chapter 00 describes the organism; preset {preset!r} has nothing to show here")
names = [n.strip() for n in organisms.split(",") if n.strip()]
if not names or set(names) - set(ORGANISMS):
    raise ValueError(f"organisms must name some of {', '.join(ORGANISMS)}, not {organisms!r}")

# %% [markdown]
# ## The world
# One problem, its prompt, and the two answer modes the corpus teaches:

# %% tags=["hide-input"]
p = Problem(347, 862, 519)
print(p.prompt + p.worked())
print()
print(p.prompt + p.direct())

# %% [markdown]
# ## Pretraining
# A 6-layer `Qwen2ForCausalLM` (width 96, 4 query heads in 2 KV groups) trained from scratch, cached
# on disk after the first build; a `LlamaForCausalLM` twin and a *sibling* Qwen2 (another seed) use
# the same tokenizer, width and corpus, for the transfer chapter. The main organism trains for 1,500
# steps; the twin and the sibling for 800 (the same schedule, compressed), with one thread each so
# that a build pretrains them side by side: the table below checks that they still meet the same
# figures as the main organism (forced " Step" far above the base, the opener in about a third of
# samples, a small last-layer vector that flips it).
# {numref}`fig-00-pretraining` follows the main organism's pretraining.

# %% tags=["hide-input"]
orgs = {n: load_organism(n) for n in names}
ch.figure("fig_pretraining", plots.pretraining_curve(orgs[names[0]].info["history"],
                                                     f"Pretraining the {names[0]} organism"))

# %% [markdown]
# ```{glue:figure} fig_pretraining
# :name: fig-00-pretraining
#
# Pretraining the main organism: the training loss on completion tokens (left) and the greedy accuracy
# on validation problems with the worked opener " Step" forced (right).
# ```

# %% [markdown]
# ## Base accuracy, the two modes, and leverage
# pass@1 at τ = 1 on held-out test problems (never seen in pretraining), with the worked or direct
# opener forced as the first token, and the *leverage* check: last-layer vectors of at most half the
# median last-layer residual norm whose direction maximises log P(" Step") at the first generated
# token, applied at every position; the headline is the smallest norm that makes P(" Step") >= 0.9.
# {numref}`fig-00-modes` shows the two modes and {numref}`fig-00-leverage` the leverage check.

# %% tags=["hide-input"]
figures = {n: measure_organism(o, n_problems=n_problems, seed=seed) for n, o in orgs.items()}
ch.table(pd.DataFrame({n: {c: f[c] for c in ACCEPTANCE_COLUMNS} for n, f in figures.items()}))

# %% tags=["hide-input"]
m = figures[names[0]]
keys = ["base_pass_at_1", "forced_worked_pass_at_1", "forced_direct_pass_at_1", "leverage_pass_at_1"]
ch.figure("fig_modes", plots.mode_shares(["base", 'forced " Step"', 'forced " The"', "leverage vector"],
                                         [m[k] for k in keys], [m["base_pass_at_1_stderr"], 0, 0, 0],
                                         title=f"{names[0]} organism: held-out pass@1 (τ = 1)"))


# %% [markdown]
# ```{glue:figure} fig_modes
# :name: fig-00-modes
#
# Held-out pass@1 of the main organism at τ = 1: sampled freely (with its standard error), with each
# answer mode's opener forced as the first token, and with the smallest last-layer "leverage" vector
# that makes " Step" the first token with probability at least 0.9.
# ```

# %% tags=["hide-input"]
ch.figure("fig_leverage", plots.leverage(m["leverage_curve"], m["forced_worked_pass_at_1"], m["base_pass_at_1"],
                                         title=f"{names[0]} organism: leverage of a last-layer opener bias"))

# %% [markdown]
# ```{glue:figure} fig_leverage
# :name: fig-00-leverage
#
# Leverage: P(" Step" as the first token) and held-out pass@1 as a last-layer bias in the direction
# that favours " Step" grows, against the forced-opener and base accuracies.
# ```

# %% tags=["remove-cell"]
results = ch.publish({**m, **{n: figures[n] for n in names[1:]}})

# %% [markdown]
# ## What we found
#
# The organism ({glue:text}`n_params:,` parameters, pretrained in {glue:text}`pretrain_seconds:.0f` s)
# answers {glue:text}`base_pass_at_1:.3f` of held-out problems at τ = 1 and opens with " Step" in
# {glue:text}`worked_opener_share:.2f` of its samples. The gap between the modes comes from the task,
# not from wrong labels: forcing " Step" gives {glue:text}`forced_worked_pass_at_1:.3f`, forcing " The"
# gives {glue:text}`forced_direct_pass_at_1:.3f` (accuracy when the model itself chose the worked mode:
# {glue:text}`accuracy_when_worked:.3f`; the direct mode: {glue:text}`accuracy_when_direct:.3f`).
# A last-layer vector of {glue:text}`leverage_norm_ratio:.2f` x the median residual norm
# ({glue:text}`median_resid_norm:.1f`; the residual at the decision position is larger,
# {glue:text}`decision_resid_norm:.1f`) raises P(" Step" first) to {glue:text}`leverage_p_opener:.2f`
# and pass@1 to {glue:text}`leverage_pass_at_1:.3f` (accuracy of its worked solutions:
# {glue:text}`leverage_accuracy_when_worked:.3f`). A first-token bias does switch the mode; how much of
# the forced-opener accuracy it keeps measures how much the same bias, applied at every position,
# disturbs the solution that follows. Because the final norm divides the vector by each position's
# residual norm, and the decision position's residual is larger than the solution tokens', the bias is
# relatively stronger on the solution than on the choice it is meant to make.
#
# | | paper (Qwen2.5-Math-7B) | this organism |
# | --- | --- | --- |
# | base model sometimes opens with a process word | "To" / "Step" | " Step" in {glue:text}`worked_opener_share:.2f` of samples |
# | RL has room to gain by choosing the opener | yes | forced " Step" {glue:text}`forced_worked_pass_at_1:.3f` vs base {glue:text}`base_pass_at_1:.3f` ± {glue:text}`base_pass_at_1_stderr:.3f` |
# | what the vector must not break | long solutions | 3-column sums |
#
# **What the organism cannot confirm.** It was built so that the first generated token decides the
# answer mode and the mode decides correctness. Effects that follow from that design, above all the
# last-layer vector acting as a first-token substitution (chapters 01 and 04), hold on the organism by
# construction; the book reports them to show the code measures them, not as independent evidence for
# the paper. Effects the design does not dictate (how shifts propagate, which components carry a
# middle layer's vector, transfer, composition) are open questions on the organism too.
