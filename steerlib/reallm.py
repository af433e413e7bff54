"""Reading the real-LM chapter's runs: what each RLOO run did per step, and the organism's numbers
that the real model's results are set beside.

A vector that learns nothing is a result too; :func:`training_table` gives what explains it: the reward
at the first and the last step, the share of prompt groups that carried any learning signal, the
gradient and vector norms, and the seconds per step spent in rollouts and in the update.

Example:
    >>> training_table({29: run29, 15: run15}).loc[29, "reward, first step"]   # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlib.chapters import LOGIT_LENS, RESULTS, TRAINING
from steerlib.rloo import signal_share

__all__ = ["training_table", "DeviceRun", "organism_reference", "first_token_rise", "per_layer",
           "lens_extremes", "PROCESS_WORDS", "seed_gains", "first_token_kl_share", "gain_shares"]

#: The words whose lens ranks the real-model chapter reports, fixed before any vector was trained: the
#: openers of step-by-step reasoning (the paper's Section 6 names "To"), as a completion would start them.
PROCESS_WORDS = ("To", "First", "Let", "Step", "We", "##", "Given", "Solution")


def training_table(runs: Mapping[int, Any]) -> Any:
    """One row per trained layer (``layer -> RunResult``): steps, learning rate, the mean reward of the
    first and the last step, the share of prompt groups with any learning signal (RLOO's advantage is
    zero in a group whose samples all pass or all fail; averaged over steps), the largest and median
    gradient norm (before clipping), the final vector norm, the snapshot kept, and median seconds per
    step for rollouts and for the update."""
    import pandas as pd

    rows = {}
    for layer, run in runs.items():
        m = run.metrics
        grads = [g for row in m for g in row["grad_norms"]]
        rows[layer] = {
            "steps": len(m),
            "lr": run.lr,
            "reward, first step": m[0]["reward_mean"],
            "reward, last step": m[-1]["reward_mean"],
            "groups with signal": statistics.fmean(signal_share(r["prompt_pass_rates"]) for r in m),
            "max grad norm": max(grads),
            "median grad norm": statistics.median(grads),
            "final |s|": next(iter(m[-1]["vector_norms"].values())),
            "snapshot kept (step)": run.step,
            "rollout s/step": statistics.median(r["seconds_generation"] for r in m),
            "update s/step": statistics.median(r["seconds_loss_backward"] for r in m),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("layer")


@dataclass(frozen=True)
class DeviceRun:
    """This chapter's tests run elsewhere and committed with their provenance (a GPU lease running
    ``benchmarks/gpu_qwen.py``): read back, never recomputed, so the page shows them beside the build's own run.

    Example:
        >>> run = DeviceRun.read("09_real_lm_h200")                         # doctest: +SKIP
        >>> run.gain("+ s23").estimate                                     # doctest: +SKIP
        0.0195
    """

    name: str
    results: dict[str, Any]

    @classmethod
    def read(cls, name: str, results_dir: str | Path | None = None) -> DeviceRun:
        """The committed results file ``<results_dir>/<name>.json`` (default: ``book/results``)."""
        path = Path(results_dir or RESULTS) / f"{name}.json"
        return cls(name, json.loads(path.read_text()))

    @property
    def label(self) -> str:
        """Where and when it ran, and at which commits: ``NVIDIA H200, 2026-12-04 (training at ..., ...)``."""
        prov = self.results["provenance"]
        train, ev = prov["training"], prov["evaluation"]
        return (f"{ev['device']}, {ev['date'][:10]} (training at commit {train['commit']}, evaluation at "
                f"{ev['commit']}; torch {ev['torch']}, transformers {ev['transformers']})")

    def gain(self, config: str) -> Any:
        """The paired gain of ``config`` over the unsteered model, as an :class:`~steerlib.stats.Estimate`."""
        from steerlib.stats import Estimate

        return Estimate(self.results["gain"][config], self.results["gain_se"][config])

    def pass_table(self) -> Any:
        """One row per evaluated configuration: pass@1 and its error, the paired gain over the base, cut
        rate and mean completion length (tokens)."""
        import pandas as pd

        r = self.results
        gain = {n: str(self.gain(n)) for n in r["gain"]}
        return pd.DataFrame({"pass@1": r["pass_at_1"], "stderr": r["stderr"], "gain over base (paired)": gain,
                             "cut rate": r["cut_rate"], "mean length": r["mean_length"]}).rename_axis("configuration")

    def training_rows(self) -> Any:
        """One row per RLOO step: mean reward, the share of prompt groups with any learning signal (pass
        rate strictly between 0 and 1), mean completion length, each vector's norm, seconds of rollouts."""
        import pandas as pd

        rows = {}
        for m in self.results["training"]:
            rates = m["prompt_pass_rates"]
            rows[m["step"] + 1] = {"reward": m["reward_mean"], "groups with signal": signal_share(rates),
                                   "mean length": m["mean_completion_length"],
                                   **{f"|s{k.split(':')[0]}|": v for k, v in m["vector_norms"].items()},
                                   "rollout s": m["seconds_generation"]}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("step")

    def glue(self, prefix: str = "h200_") -> dict[str, Any]:
        """The numbers the page's prose quotes, keyed ``<prefix><name>``."""
        from steerlib.stats import Estimate, describe, describe_share

        r, last, pen = self.results, self.results["layers"][0], self.results["layers"][1]
        before, after = r["first_tokens"]["base"], r["first_tokens"][f"+ s{last}"]
        token = r["prefix_token"]
        shares = r["penultimate_shares"]
        values = {"label": self.label, "steps": r["steps_trained"], "prompts": r["prompts_per_step"],
                  "k": r["completions_per_prompt"], "tokens": r["max_new_tokens"], "problems": r["n_test_problems"],
                  "last": last, "pen": pen, "base": str(Estimate(r["pass_at_1"]["base"], r["stderr"]["base"])),
                  "last_gain": describe(self.gain(f"+ s{last}")), "pen_gain": describe(self.gain(f"+ s{pen}")),
                  "token": repr(token), "before": before.get(token, 0.0), "after": after.get(token, 0.0),
                  "rise": describe(Estimate(r["prefix_share_rise"], r["prefix_share_rise_se"])),
                  "to_rank_last": f'{r["process_word_ranks"][f"s{last}"]["To"]:,}',
                  "best_word_last": f'{min(r["process_word_ranks"][f"s{last}"].values()):,}',
                  "kl_share": r["first_token_kl_share"], "kl_uniform": 1 / max(1.0, r["mean_length_steered"]),
                  "prefix_pass": r["prefix_pass_at_1"],
                  "prefix_share": describe_share(Estimate(r["prefix_gain_share"], r["prefix_gain_share_se"])),
                  **{f"{k.lower().replace('-', '_').replace(' ', '_')}_share": v["text"] for k, v in shares.items()}}
        values.update({f"{k}_holm_p": v for k, v in self.holm_p().items()})
        return {prefix + k: v for k, v in values.items()}

    def holm_p(self) -> dict[str, float | None]:
        """One-sided p-values of the gains of the last and penultimate vectors and the three moved
        penultimate vectors (the paper predicts each positive), Holm-adjusted for being read together:
        ``{"last": ..., "pen": ..., "skip_attn": ..., "skip_layer": ..., "mlp_only": ...}``."""
        from steerlib.claims import holm, one_sided_p

        last, pen = self.results["layers"][:2]
        names = {"last": f"+ s{last}", "pen": f"+ s{pen}", "skip_attn": "Skip-Attn", "skip_layer": "Skip-Layer",
                 "mlp_only": "MLP-only"}
        ps = holm([one_sided_p("greater", self.gain(c).estimate, self.gain(c).se) for c in names.values()])
        return dict(zip(names, ps))


def per_layer(evals: Mapping[str, Any], runs: Mapping[int, Any]) -> dict[str, dict[str, Any]]:
    """Per trained layer (``evals``: ``base`` and ``+ s<layer>`` per run): pass@1 and its error, the
    paired gain over the base and its error, training seconds and the snapshot kept, keyed by layer.

    Example:
        >>> per_layer(evals, {29: run})["gain"]["29"]                     # doctest: +SKIP
        0.02
    """
    from steerlib.stats import paired_gain

    gains = {l: paired_gain(evals[f"+ s{l}"], evals["base"]) for l in runs}
    return {"steered_pass_at_1": {str(l): evals[f"+ s{l}"].pass_at_1 for l in runs},
            "steered_stderr": {str(l): evals[f"+ s{l}"].stderr for l in runs},
            "gain": {str(l): g.estimate for l, g in gains.items()}, "gain_se": {str(l): g.se for l, g in gains.items()},
            "train_seconds": {str(l): r.train_seconds for l, r in runs.items()},
            "best_step": {str(l): r.step for l, r in runs.items()}}


def lens_extremes(model: Any, tokenizer: Any, vectors: Mapping[int, Any], k: int) -> dict[str, dict[str, Any]]:
    """Per layer: the ``k`` top tokens of each vector through the final norm and unembedding
    (``lens_top_tokens``) and the ``k`` lowest by cosine with the unembedding rows (``lens_bottom_tokens``)."""
    from steerlib.lens import top_tokens

    return {"lens_top_tokens": {str(l): top_tokens(model, tokenizer, v.vector, k=k) for l, v in vectors.items()},
            "lens_bottom_tokens": {str(l): top_tokens(model, tokenizer, v.vector, k=k, ranking="cossim", bottom=True)
                                   for l, v in vectors.items()}}


def first_token_rise(steered: Any, base: Any, token: str) -> Any:
    """The rise in the share of samples whose first generated token is ``token`` (two evaluations of
    the same problems), paired by problem: the mean over problems of (steered share - base share) with
    the standard error of those differences, so samples of one prompt count as one unit and what the
    two evaluations share (the prompt's own pull towards ``token``) cancels.

    Example:
        >>> from steerlib.evaluate import Completion, summarise
        >>> base = summarise([Completion(0, "", " To", 1), Completion(1, "", " Let", 1),
        ...                   Completion(2, "", " Let", 1)], 3, 1)
        >>> steered = summarise([Completion(0, "", " To", 1), Completion(1, "", " To", 1),
        ...                      Completion(2, "", " Let", 1)], 3, 1)
        >>> rise = first_token_rise(steered, base, " To")  # differences 0, 1, 0: mean 1/3, se sqrt(1/3 / 3)
        >>> round(rise.estimate, 3), round(rise.se, 3)
        (0.333, 0.333)
    """
    from steerlib.stats import paired_difference

    return paired_difference(steered.first_token_per_problem(token), base.first_token_per_problem(token))


def organism_reference(results_dir: str | Path | None = None) -> dict[str, Any]:
    """The organism's numbers for the same tests (chapters 01 and 04) from ``results_dir`` (default:
    this repository's ``book/results``), empty where a chapter has not run: last-layer gain ± SE, the
    first-token opener shares, the prefix token and its gain share.

    Example:
        >>> organism_reference()["gain"]                                # doctest: +SKIP
        0.509
    """
    if results_dir is None:
        results_dir = Path(__file__).resolve().parent.parent / "book" / "results"

    def read(name: str) -> dict[str, Any]:
        path = Path(results_dir) / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    r01, r04 = read(TRAINING), read(LOGIT_LENS)
    keys01 = ("gain", "gain_se", "base_opener_share", "steered_opener_share")
    keys04 = ("prefix_token", "prefix_gain_share", "prefix_gain_share_se")
    return {**{k: r01[k] for k in keys01 if k in r01}, **{k: r04[k] for k in keys04 if k in r04}}


def seed_gains(evals: Mapping[str, Any], names: Mapping[int, str], base: str = "base") -> dict[str, Any]:
    """The paired gain over ``base`` of one configuration per training seed (``seed -> name in evals``):
    each seed's gain and standard error, their mean, the spread between seeds (their standard deviation:
    what another training seed would move the gain by), and a 95% interval for the mean gain.

    The interval: ``mean ± t(n-1) * se`` with ``se^2 = sd^2 / n + se_base^2``. The seeds' spread holds
    their training and sampling noise; the base model's sampling error is shared by every seed's gain,
    so it does not average down and is added once, undivided; with three seeds t(2) = 4.30.

    Example:
        >>> seed_gains(evals, {0: "+ s23", 1: "+ s23 seed 1"})["mean"]          # doctest: +SKIP
        0.031
    """
    from steerlib.stats import paired_gain, t_975

    per = {s: paired_gain(evals[n], evals[base]) for s, n in names.items()}
    values = [g.estimate for g in per.values()]
    mean = statistics.fmean(values)
    out = {"per_seed": {str(s): g.estimate for s, g in per.items()},
           "per_seed_se": {str(s): g.se for s, g in per.items()}, "mean": mean,
           "seed_sd": statistics.stdev(values) if len(values) > 1 else float("nan")}
    if len(values) > 1:
        se = math.sqrt(out["seed_sd"] ** 2 / len(values) + evals[base].stderr ** 2)
        t = t_975(len(values) - 1)
        out.update(mean_se=se, t=t, low=mean - t * se, high=mean + t * se)
    return out


def first_token_kl_share(model: Any, tokenizer: Any, prompts: Sequence[str], result: Any,
                         vectors: Sequence[Any]) -> float:
    """The share of the KL between steered and unsteered next-token distributions, summed over every
    position of the steered completions (``result``: an evaluation with the vector, its prompts in
    ``prompts``), that falls at the first completion token (:meth:`steerlib.lens.PositionShift.first_token_share`).
    """
    from steerlib.lens import next_token_shift

    comps = result.completions
    return next_token_shift(model, tokenizer, [prompts[c.prompt_index] for c in comps], [c.token_ids for c in comps],
                            list(vectors), batch_size=2).first_token_share()  # 2 x 500 x 151,936 logits: ~1 GB


def gain_shares(evals: Mapping[str, Any], full: str, parts: Sequence[str], base: str = "base") -> dict[str, Any]:
    """The share of ``full``'s gain over ``base`` that each of ``parts`` keeps, with bootstrap errors over
    problems (:func:`steerlib.stats.share_estimate`) and in words (:func:`steerlib.stats.describe_share`):
    ``{part: {"share": ..., "se": ..., "text": ...}}``. A share is a ratio over the full gain, so it is
    readable only where that gain is clear of zero."""
    from steerlib.stats import describe_share, share_estimate

    out = {}
    for p in parts:
        est = share_estimate(evals[p], evals[base], evals[full])
        out[p] = {"share": est.estimate, "se": est.se, "text": describe_share(est)}
    return out
