"""The paper's claims at a glance: each claim beside the organism's and a real model's estimate, its
error, interval and verdict.

:func:`verdict` and :func:`settle` are the one rule every verdict in the book follows, in a fixed
vocabulary (:data:`VERDICTS`); :data:`CLAIMS` names, for each claim of the paper, the paper's number and
source, which chapter measures it and how its estimate and standard error are read from
``book/results/NN_name.json``, and, where the organism was built so that it must hold, why.
:func:`claims_table` turns the results into rows (with a Holm adjustment over the claims tested
together) and :func:`write_claims` writes ``book/results/claims.json`` and the generated page
``book/claims.md``. A claim whose estimate carries no error is "inconclusive", never a verdict read
off a bare number.

Example:
    >>> verdict("greater", 0.10, 0.02), verdict("greater", 0.01, 0.02), verdict("greater", -0.1, 0.02)
    ('reproduced', 'inconclusive', 'opposite')
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from steerlib.chapters import CHAPTERS, ORGANISM, REAL_LM, claim_chapters
from steerlib.chapters import chapter as chapter_spec
from steerlib.propagation import pair_gap
from steerlib.selection import orthogonal_gap

__all__ = ["verdict", "settle", "one_sided_p", "holm", "VERDICTS", "Claim", "ClaimRow", "CLAIMS", "claims_table",
           "claims_markdown", "load_results", "write_claims", "chapter_findings", "plain_verdicts"]

Direction = Literal["greater", "less", "near"]
Verdict = Literal["holds by construction", "reproduced", "differs in size", "opposite", "inconclusive", "unstable",
                  "no learning signal"]
Results = Mapping[str, Mapping[str, Any]]

#: The fixed vocabulary, in the order the claims page explains it (one sentence each).
VERDICTS: dict[str, str] = {
    "holds by construction": "the organism was built so that this could not come out otherwise (the row says "
                             "why); the number checks the code, not the paper",
    "reproduced": "the interval (estimate ± 2 SE) lies on the paper's side of no effect and, where the paper "
                  "gives a number, covers it",
    "differs in size": "on the paper's side of no effect, but the interval excludes the paper's number "
                       "(the numbers say whether smaller or larger); for a claim of no difference, a clear "
                       "difference",
    "opposite": "the interval lies wholly on the other side of no effect",
    "inconclusive": "the interval covers no effect, or the estimate carries no error",
    "unstable": "the verdict changes between training seeds, SAE seeds or rollout sets",
    "no learning signal": "every training run the row rests on had no prompt group with mixed rewards (RLOO's "
                          "gradient was zero), or a standard error of exactly zero (every sample scored alike): "
                          "a run that learned nothing, so no verdict can be read",
}
Z = 2.0  # the book's interval: estimate ± Z standard errors


def verdict(direction: Direction, estimate: float | None, se: float | None, *, null: float = 0.0,
            paper: float | None = None, margin: float = 0.1) -> Verdict:
    """The rule every verdict in the book follows (:data:`VERDICTS`), on the interval estimate ± 2 SE.
    ``estimate`` measures the claimed effect against ``null`` (the value of "no effect"); the paper says
    it lies on the ``direction`` side, with its own number ``paper`` where it gives one (``near``: the
    paper says "no difference", reproduced when the whole interval lies within ``margin`` of ``null``).
    "holds by construction" and "unstable" need more than one estimate: :func:`settle`.

    Example:
        >>> verdict("greater", 0.10, 0.02), verdict("greater", 0.01, 0.02), verdict("greater", -0.1, 0.02)
        ('reproduced', 'inconclusive', 'opposite')
        >>> verdict("greater", 1.2, 0.03, paper=0.75), verdict("greater", 0.7, 0.03, paper=0.75)
        ('differs in size', 'reproduced')
        >>> verdict("near", 0.0, 0.0)
        'no learning signal'
    """
    if estimate is None or se is None or not math.isfinite(estimate) or not math.isfinite(se):
        return "inconclusive"
    if se == 0:
        return "no learning signal"
    low, high = estimate - Z * se, estimate + Z * se
    if direction == "near":
        if low > null or high < null:
            return "differs in size"
        return "reproduced" if null - margin <= low and high <= null + margin else "inconclusive"
    if low <= null <= high:
        return "inconclusive"
    if (estimate > null) != (direction == "greater"):
        return "opposite"
    if paper is not None and not low <= paper <= high:
        return "differs in size"
    return "reproduced"


def settle(found: Verdict, *, construction: str | None = None, units: Sequence[Verdict] = (),
           signal: Sequence[float] = ()) -> Verdict:
    """The row's verdict from :func:`verdict`'s ``found``: ``no learning signal`` when every training run
    the estimate rests on had none (``signal``: each run's share of prompt groups with a non-zero RLOO
    advantage, :attr:`steerlib.recipes.TrainResult.signal_share`); ``unstable`` when the per-unit
    verdicts (``units``: one per training seed, SAE or rollout set) disagree; ``holds by construction``
    when the organism was built so (``construction``: why) and the estimate went the paper's way.

    Example:
        >>> settle("reproduced", units=["reproduced", "inconclusive"]), settle("reproduced", construction="built so")
        ('unstable', 'holds by construction')
        >>> settle("opposite", construction="built so")  # construction that failed is a finding, not a verdict by fiat
        'opposite'
        >>> settle("inconclusive", units=["no learning signal"] * 3)  # every seed scored alike: the pooled error
        'no learning signal'
        >>> settle("reproduced", signal=[0.0, 0.0])  # no run had a gradient: whatever moved, training did not move it
        'no learning signal'
    """
    if signal and all(share == 0 for share in signal):
        return "no learning signal"
    # every unit scored alike (a seed's paired error exactly 0): nothing was learned, even where the pooled
    # error is undefined (a benchmark of one problem has no error of its own)
    if found == "no learning signal" or (units and all(u == "no learning signal" for u in units)):
        return "no learning signal"
    if len(set(units)) > 1:
        return "unstable"
    if construction and found in ("reproduced", "differs in size"):
        return "holds by construction"
    return found


def one_sided_p(direction: Direction, estimate: float | None, se: float | None, null: float = 0.0) -> float | None:
    """The one-sided normal p-value of ``estimate`` against ``null`` towards the paper's ``direction``
    (``near``: two-sided, small when the estimate differs); ``None`` without an error.

    Example:
        >>> round(one_sided_p("greater", 0.04, 0.02), 4)
        0.0228
    """
    if estimate is None or se is None or not math.isfinite(estimate) or not math.isfinite(se) or se <= 0:
        return None
    z = (estimate - null) / se
    if direction == "near":
        return math.erfc(abs(z) / math.sqrt(2))
    return 0.5 * math.erfc((z if direction == "greater" else -z) / math.sqrt(2))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values given (``None`` stays ``None``): each adjusted value
    is what a reader compares with 0.05 when all of them were tested together.

    Example:
        >>> holm([0.01, 0.04, None, 0.03])
        [0.03, 0.06, None, 0.06]
    """
    given = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(given):
        running = max(running, min(1.0, (len(given) - rank) * p))
        out[i] = running
    return out


Read = Callable[[Mapping[str, Any]], "tuple[float | None, float | None]"]


def _pair(key: str, se_key: str) -> Read:
    """Read ``(results[key], results[se_key])`` from a chapter's results."""
    return lambda d: (d.get(key), d.get(se_key))


Units = Callable[[Mapping[str, Any]], "list[tuple[float | None, float | None]]"]
Signal = Callable[[Mapping[str, Any]], "list[float]"]


def _signal(key: str, *runs: str, prefix: str = "") -> Signal:
    """Read the training runs' signal shares a chapter publishes under ``key`` (``run -> share``): the
    runs named, or those whose name starts with ``prefix`` (every run when neither is given).

    Example:
        >>> _signal("signal_share", prefix="seed")({"signal_share": {"seed 0 sweep": 0.4, "LoRA": 0.0}})
        [0.4]
    """
    def read(d: Mapping[str, Any]) -> list[float]:
        shares = d.get(key) or {}
        return [v for k, v in shares.items() if (k in runs if runs else k.startswith(prefix))]
    return read


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and how a chapter's results measure it (which chapter: the registry,
    :attr:`steerlib.chapters.ChapterSpec.claims`)."""

    key: str
    claim: str
    paper: str  # the paper's statement or number, as the book reports it
    paper_source: str  # where the paper says it (section, figure, table)
    direction: Direction
    measure: str  # what the organism's estimate is
    keys: tuple[str, ...]  # the results keys ``read`` needs (a test checks the chapter's results file has them)
    read: Read | None = None  # the chapter's results -> (estimate, se); None: the first two ``keys``
    null: float = 0.0  # "no effect" (for "near": the value the paper reports it close to)
    paper_value: float | None = None  # the paper's estimate on the same scale, when it has one
    margin: float = 0.1  # "near": how close counts as reproduced
    construction: str | None = None  # why the organism holds it by construction (chapter 00), if it does
    units: Units | None = None  # one (estimate, se) per training seed / SAE / rollout set, where there are several
    real_keys: tuple[str, ...] = ()  # the same measure on a real model: its chapter's results keys
    real: Read | None = None  # reads them (None: the first two ``real_keys``)
    real_units: Units | None = None  # per training seed on the real model
    real_measure: str | None = None  # what ``real`` reads, when it is worded differently on the real LM
    signal: Signal | None = None  # the training runs the estimate rests on: each one's share of groups with signal
    seed_units: bool = True  # ``units`` are training seeds (they count as the row's seeds), not SAEs or rollout sets

    def estimate(self, results: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """``(estimate, se)`` from the results of the chapter that measures it on the organism."""
        return (self.read or _pair(*self.keys[:2]))(results)

    def real_estimate(self, results: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """``(estimate, se)`` from a real-model chapter's results."""
        return (self.real or _pair(*self.real_keys[:2]))(results)

    def judge(self, est: float | None, se: float | None, units: Sequence[tuple[float | None, float | None]] = (),
              *, organism: bool = True, signal: Sequence[float] = ()) -> Verdict:
        """The row's verdict for one model (``organism``: whether :attr:`construction` applies)."""
        found = verdict(self.direction, est, se, null=self.null, paper=self.paper_value, margin=self.margin)
        per_unit = [verdict(self.direction, e, u, null=self.null, paper=self.paper_value, margin=self.margin)
                    for e, u in units]
        return settle(found, construction=self.construction if organism else None, units=per_unit, signal=signal)


@dataclass(frozen=True)
class ClaimRow:
    """A claim with each model's estimate, interval and verdict (a row of ``claims.json``): the organism's
    columns, then ``real_lm*`` for the real model when its chapter measures the claim."""

    key: str
    claim: str
    chapter: str
    paper: str
    paper_source: str
    paper_value: float | None
    measure: str
    organism: float | None
    organism_se: float | None
    ci_low: float | None
    ci_high: float | None
    n_seeds: int | None
    p_value: float | None
    holm_p: float | None
    verdict: str
    construction: str | None = None
    real_lm: float | None = None
    real_lm_se: float | None = None
    real_lm_ci_low: float | None = None
    real_lm_ci_high: float | None = None
    real_lm_n_seeds: int | None = None
    real_lm_p: float | None = None
    real_lm_holm_p: float | None = None
    real_lm_verdict: str | None = None


def _interval(est: float | None, se: float | None) -> tuple[float | None, float | None]:
    if est is None or se is None or not math.isfinite(est) or not math.isfinite(se):
        return None, None
    return est - Z * se, est + Z * se


def _n_seeds(d: Mapping[str, Any]) -> int:
    return len(d.get("seeds") or [0])


def _seed_gains_01(d: Mapping[str, Any]) -> list[tuple[float | None, float | None]]:
    """Chapter 01: each training seed's paired gain."""
    per, ses = d.get("steered_pass_at_1_per_seed") or {}, d.get("gain_paired_se_per_seed") or {}
    return [(per[s] - d["base_pass_at_1"], ses.get(s)) for s in per]


def _seed_gains_real(d: Mapping[str, Any]) -> list[tuple[float | None, float | None]]:
    """The real-model chapter: each training seed's paired gain of the last layer's vector."""
    seeds = d.get("last_layer_seeds") or {}
    return [(g, (seeds.get("per_seed_se") or {}).get(s)) for s, g in (seeds.get("per_seed") or {}).items()]


def _sae_units(d: Mapping[str, Any]) -> list[tuple[float | None, float | None]]:
    """DiffSAE: each SAE's held-out difference (correct − incorrect firing rate of its top feature) and error."""
    return [(row.get("difference"), row.get("se")) for row in d.get("top_feature_stability") or []]


def _last_layer(key: str, se_key: str) -> Read:
    """Read a per-layer estimate and its error at the real model's last trained layer."""
    def read(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
        est, se = d.get(key), d.get(se_key)
        if isinstance(est, Mapping):
            layer = str(d["layers"][0])
            est, se = est.get(layer), (se or {}).get(layer)
        return est, se
    return read


def _mean_layer_gain(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The mean over layers of (layer pass@1 - base pass@1). Its error: the layers' errors average down,
    the base's does not (every gain subtracts the same base estimate), so
    ``SE^2 = sum(se_l^2) / n^2 + se_base^2`` (layers and base treated as independent samples).

    Example:
        >>> _mean_layer_gain({"per_layer": {"0": 0.5, "1": 0.75}, "per_layer_stderr": {"0": 0.02, "1": 0.02},
        ...                   "base_pass_at_1": 0.25, "base_stderr": 0.01})  # sqrt(0.0008 / 4 + 0.0001)
        (0.375, 0.017320508075688773)
    """
    per, ses = d.get("per_layer") or {}, d.get("per_layer_stderr") or {}
    if not per:
        return None, None
    gains = [per[k] - d["base_pass_at_1"] for k in per]
    base_se = d.get("base_stderr")
    if base_se is None:
        return sum(gains) / len(gains), None
    return sum(gains) / len(gains), math.sqrt(sum(ses[k] ** 2 for k in per) / len(per) ** 2 + base_se ** 2)


def _orthogonal(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """:func:`steerlib.selection.orthogonal_gap` of the published pass@1 and errors."""
    orth = d.get("orthogonal_pass_at_1") or {}
    if not orth:
        return None, None
    gap = orthogonal_gap({**orth, "original": d["original_pass_at_1"]}, d.get("orthogonal_stderr") or {})
    return gap.estimate, None if math.isnan(gap.se) else gap.se


def _sae(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """DiffSAE: the mean over SAEs (training seeds x rollout sets x SAE seeds) of the top feature's held-out
    difference in firing rate, correct minus incorrect generations; its error is the mean of the SAEs'
    errors, what the error of the mean would be if the SAEs were perfectly correlated (they share
    rollouts), so an upper bound.

    Example:
        >>> _sae({"top_feature_stability": [{"difference": 0.5, "se": 0.1}, {"difference": 0.3, "se": 0.2}]})
        (0.4, 0.15000000000000002)
    """
    units = _sae_units(d)
    if not units or any(e is None or u is None for e, u in units):
        return None, None
    return sum(e for e, _ in units) / len(units), sum(u for _, u in units) / len(units)  # type: ignore[misc]


def _real_layer_gain(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The real-model chapter's mean gain over the layers it trained (:func:`_mean_layer_gain` on its keys)."""
    return _mean_layer_gain({"per_layer": d.get("steered_pass_at_1"), "per_layer_stderr": d.get("steered_stderr"),
                             "base_pass_at_1": d.get("base_pass_at_1"), "base_stderr": d.get("base_stderr")})


def _penultimate(name: str) -> Read:
    """Read one patch's share of the penultimate vector's gain (``penultimate_shares``) on the real model."""
    def read(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
        row = (d.get("penultimate_shares") or {}).get(name) or {}
        return row.get("share"), row.get("se")
    return read


def _seed_estimates(key: str, name: str | None = None) -> Units:
    """Per training seed, an estimate a chapter publishes under ``key`` as ``seed -> {estimate, se}``, or
    ``seed -> name -> {estimate, se}`` with ``name`` (chapter 05's routes, chapter 03's Diff-Vector cosine).

    Example:
        >>> _seed_estimates("shares", "Skip-Attn")({"shares": {"0": {"Skip-Attn": {"estimate": 0.9, "se": 0.1}}}})
        [(0.9, 0.1)]
    """
    def read(d: Mapping[str, Any]) -> list[tuple[float | None, float | None]]:
        rows = [r if name is None else (r.get(name) or {}) for r in (d.get(key) or {}).values()]
        return [(r.get("estimate"), r.get("se")) for r in rows]
    return read


def _kl_concentration(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The real-model chapter's first-token KL share times the mean length of the same completions (its
    concentration over the even share); that chapter keeps no per-sequence KL, so there is no error.

    Example:
        >>> _kl_concentration({"first_token_kl_share": 0.01, "mean_length_steered": 300.0})
        (3.0, None)
    """
    share, length = d.get("first_token_kl_share"), d.get("mean_length_steered")
    return (share * length if share is not None and length is not None else None), None


def _pairs(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """:func:`steerlib.propagation.pair_gap` of the published pair matrix (no error from one pair)."""
    acc = d.get("pair_accuracy")
    if not acc:
        return None, None
    gap = pair_gap(acc)
    return gap.estimate, gap.se if len(acc) > 2 else None


_BUILT = "the organism answers right in its worked mode and wrong in its direct one, and its first generated token " \
         "picks the mode (chapter 00)"

CLAIMS: tuple[Claim, ...] = (
    Claim("single_layer_gain", "A vector trained at one layer raises accuracy", "yes", "Section 4, Figure 1",
          "greater", "pass@1 gain of the last-layer vector", ("gain", "gain_se"),
          construction=f"{_BUILT}: a vector that raises that token's logit cannot fail to raise accuracy",
          units=_seed_gains_01, real_keys=("gain", "gain_se", "layers"), real=_last_layer("gain", "gain_se"),
          real_units=_seed_gains_real, signal=_signal("signal_share_per_seed")),
    Claim("most_layers_help", "Vectors at almost every layer help", "all but 2 of 28 layers (Qwen2.5-Math-7B)",
          "Figure 1", "greater", "mean pass@1 gain over the layers",
          ("per_layer", "per_layer_stderr", "base_pass_at_1", "base_stderr"), _mean_layer_gain,
          real_keys=("steered_pass_at_1", "steered_stderr", "base_pass_at_1", "base_stderr"), real=_real_layer_gain,
          real_measure="mean pass@1 gain over the layers trained (last, penultimate, middle and any extra)",
          signal=_signal("signal_share", prefix="seed")),
    Claim("all_layer_vs_full", "All-layer steering comes close to full fine-tuning",
          'close ("explains a large portion")', "precursor paper, Table 1", "near",
          "all-layer minus full fine-tune pass@1 (paired)", ("all_layer_minus_full_ft", "all_layer_minus_full_ft_se"),
          margin=0.05, signal=_signal("signal_share", "all layers", "full fine-tune")),
    Claim("first_token", "The last layer's vector makes a process word the first token",
          '"To" (Qwen) / "Step" (Llama) boosted', "Section 6, Figure 3", "greater",
          "rise in the share of samples opening with the worked opener",
          ("opener_rise", "opener_rise_se"), signal=_signal("signal_share_per_seed"),
          construction=f"{_BUILT}: the first token is the only place a vector can change the answer",
          real_keys=("prefix_share_rise", "prefix_share_rise_se"),
          real_measure="rise in the share of samples opening with the token the last layer's vector boosts most"),
    Claim("kl_first_token", "The last layer's vector changes predictions mostly at the first generated token",
          "concentrated there: a token-substitution bias (no number)", "Section 6", "greater",
          "the first position's share of the KL along the steered completions over its even share (1 / mean "
          "length); above 10 reads as concentrated (chapter 09's rule, fixed before its run)",
          ("first_token_kl_concentration", "first_token_kl_concentration_se"), null=10.0,
          construction=f"{_BUILT}: once the opener is given, steered and unsteered model continue the same mode, so "
                       "little is left to change after the first token",
          units=_seed_estimates("token_tests_per_seed", "kl_concentration"),
          real_keys=("first_token_kl_share", "mean_length_steered"), real=_kl_concentration,
          real_measure="the first position's share of the KL times the completions' mean length (the chapter kept "
                       "no per-sequence KL: no error)"),
    Claim("prefix_share", "Appending the boosted token recovers most of the last layer's gain",
          "about three quarters", "Section 6", "greater", "share of the gain the prefix recovers",
          ("prefix_gain_share", "prefix_gain_share_se"), paper_value=0.75,
          construction=f"{_BUILT}: forcing the worked opener puts every answer in the mode that is nearly always "
                       "right, so it recovers the whole gain or more",
          units=_seed_estimates("token_tests_per_seed", "prefix_gain_share"),
          real_keys=("prefix_gain_share", "prefix_gain_share_se")),
    Claim("diff_vector", "A propagated shift is nearly orthogonal to later layers' own vectors",
          "Diff-Vector cosine falls quickly", "Section 5, Figure 2", "near",
          "mean Diff-Vector cosine above the diagonal", ("mean_offdiag_diff_vector", "mean_offdiag_diff_vector_se"),
          units=_seed_estimates("diff_vector_per_seed")),
    Claim("diff_diff", "A propagated shift stays aligned with itself across tokens",
          "Diff-Diff cosine stays clearly above zero (no number)", "Section 5, Figure 2", "greater",
          "mean Diff-Diff cosine above the diagonal (each token's shift against its sequence's mean shift)",
          ("mean_offdiag_diff_diff", "mean_offdiag_diff_diff_se"), units=_seed_estimates("diff_diff_per_seed")),
    Claim("orthogonal", "Vectors retrained orthogonal to the original do not match it",
          "none matched", "early version, Appendix F", "greater",
          "original minus the best orthogonal vector, pass@1",
          ("orthogonal_pass_at_1", "orthogonal_stderr", "original_pass_at_1"), _orthogonal,
          construction=f"{_BUILT}: its one lever is the opener's logit direction, which a vector kept orthogonal "
                       "to the original reaches less well", units=_seed_estimates("orthogonal_per_seed")),
    Claim("skip_attn", "Skip-Attn keeps more than half of the penultimate vector's gain",
          "over half", "Section 7", "greater", "share of the gain Skip-Attn keeps",
          ("skip_attn_gain_share", "skip_attn_gain_share_se"), null=0.5,
          units=_seed_estimates("route_shares_per_seed", "Skip-Attn"),
          real_keys=("skip_attn_gain_share", "skip_attn_gain_share_se")),
    Claim("skip_layer", "The last block's MLP carries the penultimate vector: moved past the whole block, it "
          "keeps less than half of its gain", "the MLP is the main contributor (Skip-Layer drawn, value not given)",
          "Section 7, Figure 5", "less", "share of the gain Skip-Layer keeps",
          ("skip_layer_gain_share", "skip_layer_gain_share_se"), null=0.5,
          units=_seed_estimates("route_shares_per_seed", "Skip-Layer"),
          real_keys=("penultimate_shares",), real=_penultimate("Skip-Layer")),
    Claim("mlp_only", "The penultimate vector works through the last block's MLP: fed to that MLP's input alone, "
          "it keeps more than half of its gain", "the effect runs through the last MLP (MLP-only not run)",
          "Section 7", "greater", "share of the gain kept with the vector added to the next block's MLP input only",
          ("mlp_only_gain_share", "mlp_only_gain_share_se"), null=0.5,
          units=_seed_estimates("route_shares_per_seed", "MLP-only"),
          real_keys=("penultimate_shares",), real=_penultimate("MLP-only")),
    Claim("v_head", "The penultimate vector added to the next block's value projections recovers its gain",
          'one KV group ("V1") closes the gap in Qwen; no single head does in Llama', "Section 7, Appendix I",
          "greater", "share of the gain kept with the vector fed to the value projections of every KV group only",
          ("v_only_gain_share", "v_only_gain_share_se"), null=0.5, paper_value=1.0,
          units=_seed_estimates("route_shares_per_seed", "v-only, all groups"),
          real_keys=("penultimate_shares",), real=_penultimate("V-head patch")),
    Claim("pairs", "Vectors trained alone at two layers combine constructively",
          "constructive in Qwen, often harmful in Llama (no numbers)", "Figure 13, Appendix D", "greater",
          "mean over layer pairs of pass@1 with both vectors minus the better single vector's (pairs share "
          "layers: the error is a lower bound)", ("pair_accuracy",), _pairs, units=_seed_estimates("pairs_per_seed")),
    Claim("transfer_down", "A base model's vectors work on its fine-tuned descendant", "works", "Section 9, Table 1",
          "greater", "normalised gain, parent to tuned model",
          ("parent_to_child_mean_gain", "parent_to_child_mean_gain_se"),
          units=_seed_estimates("family_gain_per_seed", "parent_to_child")),
    Claim("transfer_up", "A fine-tuned model's vectors do not help its base model",
          "negative, Qwen2.5-7B-Instruct to Qwen2.5-Math-7B", "Section 9, Table 1", "less",
          "normalised gain, tuned model to parent", ("child_to_parent_mean_gain", "child_to_parent_mean_gain_se"),
          units=_seed_estimates("family_gain_per_seed", "child_to_parent")),
    Claim("adaptive_magnitude", "Adaptive steering puts its magnitude on the meaningful part of the prompt",
          "concentrates on meaningful prompt segments (no number)", "Section 10, Appendix S", "greater",
          "the rank-1 LoRA's mean magnitude on the problem's tokens minus on the template's prompt tokens, per prompt "
          "(last layer's adapter; the problem read as the meaningful segment)",
          ("problem_magnitude_excess", "problem_magnitude_excess_se"),
          units=_seed_estimates("problem_magnitude_excess_per_seed")),
    Claim("sae_correct", "The DiffSAE isolates a feature associated with correct generations",
          'features "associated with correct generations"; reviewers saw the analysed one fire on incorrect ones',
          "Section 8, Figure 7; v3 abstract", "greater",
          "firing rate on correct minus incorrect generations of the top feature by that difference, chosen on "
          "half of the generations and measured on the other (mean over SAEs; the error bounds it from above)",
          ("top_feature_stability",), _sae, units=_sae_units, seed_units=False,
          construction=f"{_BUILT}: the two modes write different tokens, so a feature that reads the mode fires on "
                       "one outcome's generations far more than on the other's"),
)


def claims_table(results: Results) -> list[ClaimRow]:
    """One row per claim from the chapters' results (``chapter stem -> results dict``): the organism's
    estimate from the chapter that measures it, and a real model's from every chapter that measures it
    there (:data:`steerlib.chapters.CHAPTERS`); each with its interval, one-sided p-value, Holm-adjusted
    p-value (over the claims tested on that model) and verdict."""
    where = claim_chapters()
    real = {key: spec.name for spec in CHAPTERS.values() for key in spec.real_claims}
    found = []
    for c in CLAIMS:
        data = results.get(where[c.key], {})
        try:
            est, se = c.estimate(data)
            units = c.units(data) if c.units else []
        except (TypeError, KeyError, ZeroDivisionError):  # an input missing or null (e.g. no incorrect rollouts)
            est, se, units = None, None, []
        real_data = results.get(real.get(c.key, ""))
        real_est = real_se = real_verdict = None
        real_units: list[tuple[float | None, float | None]] = []
        if real_data is not None:
            try:
                real_est, real_se = c.real_estimate(real_data)
                real_units = c.real_units(real_data) if c.real_units else []
            except (TypeError, KeyError):
                real_est, real_se = None, None
            real_verdict = c.judge(real_est, real_se, real_units, organism=False)
        # the real-model chapter trains its other vectors once: a row without per-seed units rests on one seed
        r_n_seeds = (len(real_units) if real_units else 1) if real_data is not None else None
        built = data.get("preset", "organism") == "organism"  # construction holds for the organism only
        signal = c.signal(data) if c.signal else []
        n_seeds = (len(units) if units and c.seed_units else _n_seeds(data)) if data else None
        found.append((c, n_seeds, est, se, c.judge(est, se, units, organism=built, signal=signal), real_data, real_est,
                      real_se, real_verdict, r_n_seeds))
    holm_org = holm([one_sided_p(c.direction, e, u, c.null) for c, _, e, u, *_ in found])
    holm_real = holm([one_sided_p(c.direction, e, u, c.null) if d is not None else None
                      for c, *_, d, e, u, _v, _n in found])
    rows = []
    for (c, n_seeds, est, se, v, real_data, r_est, r_se, r_v, r_n_seeds), h, hr in zip(found, holm_org, holm_real):
        rows.append(ClaimRow(
            c.key, c.claim, where[c.key], c.paper, c.paper_source, c.paper_value, c.measure, est, se,
            *_interval(est, se), n_seeds, one_sided_p(c.direction, est, se, c.null), h, v,
            c.construction if v == "holds by construction" else None,
            r_est, r_se, *_interval(r_est, r_se), r_n_seeds,
            one_sided_p(c.direction, r_est, r_se, c.null) if real_data is not None else None, hr, r_v))
    return rows


def chapter_findings(chapter: str, results: Mapping[str, Any]) -> str:
    """The verdicts of the claims chapter ``chapter`` measures, as the Markdown list its result box shows:
    one item per claim, its verdict as a coloured badge first, then the claim, the measure with its
    error, the paper's statement and, on the organism, why a row holds by construction.

    Example:
        >>> note = chapter_findings("01_training", {"gain": 0.5, "gain_se": 0.02, "preset": "qwen2.5-math-1.5b"})
        >>> print(note.splitlines()[0][:110])
        - <span class="verdict verdict-reproduced">reproduced</span> **A vector trained at one layer raises accuracy**
    """
    spec = chapter_spec(chapter)
    if spec.real_claims:
        rows = [r for r in claims_table({chapter: results}) if r.real_lm_verdict is not None]
        measures = {c.key: c.real_measure for c in CLAIMS if c.real_measure}
        items = [(r.real_lm_verdict, r, measures.get(r.key, r.measure), r.real_lm, r.real_lm_se, None) for r in rows]
    else:
        items = [(r.verdict, r, r.measure, r.organism, r.organism_se, r.construction)
                 for r in claims_table({chapter: results}) if r.chapter == chapter]
    return "\n".join(f"- {_badge(v)} **{r.claim}**: {measure} {_num(est, se)} (paper: {r.paper}; {r.paper_source})"
                     + (f". Why: {why}." if why else "") for v, r, measure, est, se, why in items) \
        or "This chapter measures none of the claims listed on the claims page."


def _num(value: float | None, se: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else " (no error yet)")


def _cell(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else " (no error)")


def plain_verdicts(note: str) -> str:
    """A note with its verdict badges (:func:`_badge`) as plain bracketed words, for a terminal.

    Example:
        >>> plain_verdicts(f"- {_badge('opposite')} **a claim**")
        '- [opposite] **a claim**'
    """
    return re.sub(r'<span class="verdict [^"]*">([^<]*)</span>', r"[\1]", note)


def _badge(v: str | None) -> str:
    """A verdict as the page shows it: a span whose class (``verdict-<words>``) colours it (book/_static)."""
    return "–" if v is None else f'<span class="verdict verdict-{v.replace(" ", "-")}">{v}</span>'


def claims_markdown(rows: list[ClaimRow], link_prefix: str = "chapters/", real_model: str = "real model") -> str:
    """The claims as one markdown table: paper against the organism and ``real_model`` side by side, each
    with its estimate, 95% interval and coloured verdict; the measure beside each claim, its chapter linked.

    Example:
        >>> claims_markdown(claims_table({}))[:32]
        '| claim | paper | organism: esti'
    """
    lines = [f"| claim | paper | organism: estimate [interval] | verdict | {real_model} | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        real = "–" if r.real_lm_verdict is None else _cell(r.real_lm, r.real_lm_ci_low, r.real_lm_ci_high)
        lines.append(f"| **{r.claim}**: *{r.measure}* ({{doc}}`chapter {r.chapter[:2]} <{link_prefix}{r.chapter}>`)"
                     f" | {r.paper} (*{r.paper_source}*) | "
                     f"{_cell(r.organism, r.ci_low, r.ci_high)} | {_badge(r.verdict)} | {real} | "
                     f"{_badge(r.real_lm_verdict)} |")
    return "\n".join(lines) + "\n"


def _multiplicity(rows: list[ClaimRow]) -> str:
    """One sentence per model: claims tested, how many pass p < 0.05 before and after Holm's adjustment."""
    def line(who: str, ps: list[float | None], adjusted: list[float | None]) -> str:
        tested = [p for p in ps if p is not None]
        alone = sum(p < 0.05 for p in tested)
        return (f"on {who}, {len(tested)} claims carry a p-value, of which {alone} {'falls' if alone == 1 else 'fall'} "
                f"below 0.05 alone and {sum(p is not None and p < 0.05 for p in adjusted)} after Holm's adjustment")
    return "; ".join([line("the organism", [r.p_value for r in rows], [r.holm_p for r in rows]),
                      line("the real model", [r.real_lm_p for r in rows], [r.real_lm_holm_p for r in rows])])


def load_results(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``chapter stem -> results`` for every ``NN_name.json`` in ``results_dir``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("[0-9][0-9]_*.json"))}


def write_claims(results_dir: str | Path, page: str | Path) -> list[ClaimRow]:
    """Write ``claims.json`` into ``results_dir`` and the generated page ``page``; returns the rows."""
    from steerlib.atomic import atomic_write_text, write_json

    results = load_results(results_dir)
    rows = claims_table(results)
    real = results.get(REAL_LM, {})
    model = str(real.get("model") or real.get("preset") or "a real model").split("/")[-1]
    write_json(Path(results_dir) / "claims.json", [asdict(r) for r in rows])
    built = "\n".join(f"- **{r.claim}**: {r.construction.removeprefix(_BUILT + ': ')}." for r in rows if r.construction)
    vocabulary = "\n".join(f"- {_badge(v)}: {why}." for v, why in VERDICTS.items())
    atomic_write_text(page, _PAGE.format(table=claims_markdown(rows, real_model=model), organism=ORGANISM,
                                         real_lm=REAL_LM, model=model, vocabulary=vocabulary, built=built or "- none",
                                         multiplicity=_multiplicity(rows), n_claims=len(rows),
                                         real_steps=_steps_text(real), real_preset=real.get("preset", "?")))
    return rows


def _steps_text(results: Mapping[str, Any]) -> str:
    """How many RLOO steps the real model's vectors trained for, read from its results.

    Example:
        >>> _steps_text({"training": {"23": {"steps": 2}, "12": {"steps": 2}}})
        '2 RLOO steps'
    """
    steps = sorted({row.get("steps") for row in (results.get("training") or {}).values()} - {None})
    return f"{'-'.join(map(str, steps))} RLOO steps" if steps else "an unknown number of RLOO steps"


_PAGE = """# The paper's claims at a glance

<!-- Generated by `python -m steerlib.book html` from book/results/*.json (steerlib/claims.py); do not edit. -->

Each row is one of {n_claims} claims of the paper with the paper's statement and where it makes it, the
number the book measures for it with a 95% interval (estimate ± 2 standard errors), and a verdict from
a fixed vocabulary, applied by one rule (`steerlib.claims.verdict`):

{vocabulary}

The organism was built so that it answers right in its worked mode and wrong in its direct one, and
its first generated token picks the mode ({{doc}}`chapters/{organism}`). Where that forces a claim's
direction, the organism's verdict says so instead of "reproduced", for these reasons:

{built}

The real-model columns put the claims it can test to a pretrained model of the paper's own family that
nobody here designed, {model} on GSM-Symbolic word problems ({{doc}}`chapters/{real_lm}`), by the same
rule. Its vectors trained for {real_steps} (preset `{real_preset}`), so read those columns with the
chapter's own caveats.

**Several claims at once.** A verdict at two standard errors is a test at about the 5% level, and the
page makes many: {multiplicity} (one-sided p-values from each estimate and its error; `holm_p` in
`book/results/claims.json`).

:::{{div}} full-width
{table}
:::
"""
