"""The paper's claims at a glance: each claim beside the organism's estimate, its error and a verdict.

:func:`verdict` is the one rule every verdict in the book follows (two standard errors); :data:`CLAIMS`
names, for each claim of the paper, which chapter measures it and how its estimate and standard error
are read from ``book/results/NN_name.json``; :func:`claims_table` turns the results into rows and
:func:`write_claims` writes ``book/results/claims.json`` and the generated page ``book/claims.md``
(the landing page links it). A claim whose estimate carries no error yet is "inconclusive", never a
verdict read off a bare number.

Example:
    >>> verdict("greater", 0.10, 0.02), verdict("greater", 0.01, 0.02), verdict("greater", -0.1, 0.02)
    ('reproduced', 'inconclusive', 'differs')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from steerlib.chapters import CHAPTERS, ORGANISM, REAL_LM, claim_chapters
from steerlib.chapters import chapter as chapter_spec

__all__ = ["verdict", "Claim", "ClaimRow", "CLAIMS", "claims_table", "claims_markdown", "load_results", "write_claims",
           "chapter_findings"]

Direction = Literal["greater", "less", "near"]
Verdict = Literal["reproduced", "not reproduced", "differs", "inconclusive"]
Results = Mapping[str, Mapping[str, Any]]


def verdict(direction: Direction, estimate: float | None, se: float | None, *, null: float = 0.0,
            paper: float | None = None, margin: float = 0.1) -> Verdict:
    """The 2-SE rule. ``estimate`` measures the claimed effect against ``null`` (the value of "no
    effect"); the paper says it lies on the ``direction`` side (``near``: within ``margin`` of ``null``,
    reproduced only when the whole 2-SE interval lies inside that margin, differs when it excludes
    ``null``).

    - reproduced: the estimate is more than 2 SE beyond ``null`` on the paper's side;
    - differs: more than 2 SE beyond ``null`` on the other side;
    - not reproduced: within 2 SE of ``null`` while the paper's own value (when given) lies more
      than 2 SE away, so the organism rules out the paper's size of effect;
    - inconclusive: anything else, including an estimate without an error.

    Example:
        >>> verdict("greater", 0.01, 0.02, paper=0.3), verdict("less", -0.2, 0.05), verdict("greater", 0.2, None)
        ('not reproduced', 'reproduced', 'inconclusive')
    """
    if estimate is None or se is None or not math.isfinite(estimate) or not math.isfinite(se):
        return "inconclusive"
    if direction == "near":
        if abs(estimate - null) > 2 * se:
            return "differs"
        return "reproduced" if abs(estimate - null) + 2 * se <= margin else "inconclusive"
    sign = 1.0 if direction == "greater" else -1.0
    z = sign * (estimate - null)
    if z > 2 * se:
        return "reproduced"
    if z < -2 * se:
        return "differs"
    if paper is not None and abs(paper - estimate) > 2 * se:
        return "not reproduced"
    return "inconclusive"


def _diff_se(*ses: float | None) -> float | None:
    """Standard error of a difference of independent estimates (an upper bound when they are paired)."""
    return None if any(s is None for s in ses) else math.sqrt(sum(s * s for s in ses))  # type: ignore[operator]


def _share_se(p: float, n: float) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


Read = Callable[[Mapping[str, Any]], "tuple[float | None, float | None]"]


def _pair(key: str, se_key: str) -> Read:
    """Read ``(results[key], results[se_key])`` from a chapter's results."""
    return lambda d: (d.get(key), d.get(se_key))


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and how a chapter's results measure it (which chapter: the registry,
    :attr:`steerlib.chapters.ChapterSpec.claims`)."""

    key: str
    claim: str
    paper: str  # the paper's statement or number, as the book reports it
    direction: Direction
    measure: str  # what the organism's estimate is
    keys: tuple[str, ...]  # the results keys ``read`` needs (a test checks the chapter's results file has them)
    read: Read | None = None  # the chapter's results -> (estimate, se); None: the first two ``keys``
    null: float = 0.0  # "no effect" (for "near": the value the paper reports it close to)
    paper_value: float | None = None  # the paper's estimate on the same scale, when it has one
    margin: float = 0.1  # "near": how close counts as reproduced
    real_keys: tuple[str, ...] = ()  # the same measure on a real model: its chapter's results keys
    real: Read | None = None  # reads them (None: the first two ``real_keys``)
    real_measure: str | None = None  # what ``real`` reads, when it is worded differently on the real LM

    def estimate(self, results: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """``(estimate, se)`` from the results of the chapter that measures it on the organism."""
        return (self.read or _pair(*self.keys[:2]))(results)

    def real_estimate(self, results: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """``(estimate, se)`` from a real-model chapter's results."""
        return (self.real or _pair(*self.real_keys[:2]))(results)


@dataclass(frozen=True)
class ClaimRow:
    """A claim with the organism's estimate and its verdict (a row of ``claims.json``)."""

    key: str
    claim: str
    chapter: str
    paper: str
    measure: str
    organism: float | None
    organism_se: float | None
    verdict: str
    real_lm: float | None = None
    real_lm_se: float | None = None
    real_lm_verdict: str | None = None


def _first_token(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    if "steered_opener_share" not in d:
        return None, None
    n = d["n_test_samples"]
    return (d["steered_opener_share"] - d["base_opener_share"],
            _diff_se(_share_se(d["steered_opener_share"], n), _share_se(d["base_opener_share"], n)))


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
    orth, ses = d.get("orthogonal_pass_at_1") or {}, d.get("orthogonal_stderr") or {}
    if not orth:
        return None, None
    best = max(orth, key=orth.get)
    return d["original_pass_at_1"] - orth[best], _diff_se(ses.get("original"), ses.get(best))


def _sae(d: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Share of SAEs (seeds x rollout sets) whose top feature fires more on incorrect generations, with
    its binomial error; without the stability check, the one SAE's difference in firing rates."""
    rows = d.get("top_feature_stability")
    if rows:
        p = sum(row["tracks"] == "incorrect" for row in rows) / len(rows)
        return p, _share_se(p, len(rows)) if 0 < p < 1 else 1 / (2 * len(rows))
    if "top_feature_correct_rate" not in d:
        return None, None
    n1, n0 = d["correct_rollouts"], d["rollouts"] - d["correct_rollouts"]
    p1, p0 = d["top_feature_correct_rate"], d["top_feature_incorrect_rate"]
    return p0 - p1, _diff_se(_share_se(p1, n1), _share_se(p0, n0))


CLAIMS: tuple[Claim, ...] = (
    Claim("single_layer_gain", "A vector trained at one layer raises accuracy", "yes (Section 4, Figure 1)",
          "greater", "pass@1 gain of the last-layer vector", ("gain", "gain_se"),
          real_keys=("gain", "gain_se", "layers"), real=_last_layer("gain", "gain_se")),
    Claim("most_layers_help", "Vectors at almost every layer help", "all but 2 of 28 layers (Qwen2.5-Math-7B)",
          "greater", "mean pass@1 gain over the layers",
          ("per_layer", "per_layer_stderr", "base_pass_at_1", "base_stderr"), _mean_layer_gain),
    Claim("all_layer_vs_full", "All-layer steering comes close to full fine-tuning",
          'close ("explains a large portion"; precursor, Table 1)', "near",
          "all-layer minus full fine-tune pass@1 (paired)", ("all_layer_minus_full_ft", "all_layer_minus_full_ft_se"),
          margin=0.05),
    Claim("first_token", "The last layer's vector makes a process word the first token",
          '"To" (Qwen) / "Step" (Llama) boosted (Section 6, Figure 3)', "greater",
          "rise in the share of samples opening with the worked opener",
          ("steered_opener_share", "base_opener_share", "n_test_samples"), _first_token,
          real_keys=("prefix_share_rise", "prefix_share_rise_se"),
          real_measure="rise in the share of samples opening with the token the last layer's vector boosts most"),
    Claim("prefix_share", "Appending the boosted token recovers most of the last layer's gain",
          "about three quarters (Section 6)", "greater", "share of the gain the prefix recovers",
          ("prefix_gain_share", "prefix_gain_share_se"), paper_value=0.75,
          real_keys=("prefix_gain_share", "prefix_gain_share_se")),
    Claim("diff_vector", "A propagated shift is nearly orthogonal to later layers' own vectors",
          "Diff-Vector cosine falls quickly (Section 5, Figure 2)", "near",
          "mean Diff-Vector cosine above the diagonal", ("mean_offdiag_diff_vector", "mean_offdiag_diff_vector_se")),
    Claim("orthogonal", "Vectors retrained orthogonal to the original do not match it",
          "none matched (early version, App. F)", "greater",
          "original minus the best orthogonal vector, pass@1",
          ("orthogonal_pass_at_1", "orthogonal_stderr", "original_pass_at_1"), _orthogonal),
    Claim("skip_attn", "Skip-Attn keeps more than half of the penultimate vector's gain",
          "over half (Section 7)", "greater", "share of the gain Skip-Attn keeps",
          ("skip_attn_gain_share", "skip_attn_gain_share_se"), null=0.5,
          real_keys=("skip_attn_gain_share", "skip_attn_gain_share_se")),
    Claim("transfer_down", "A base model's vectors work on its fine-tuned descendant", "works (Section 9, Table 1)",
          "greater", "normalised gain, parent to tuned model",
          ("parent_to_child_mean_gain", "parent_to_child_mean_gain_se")),
    Claim("transfer_up", "A fine-tuned model's vectors do not help its base model",
          "negative, Qwen2.5-7B-Instruct to Qwen2.5-Math-7B (Table 1)", "less",
          "normalised gain, tuned model to parent", ("child_to_parent_mean_gain", "child_to_parent_mean_gain_se")),
    Claim("sae_incorrect", "The top DiffSAE feature marks incorrect generations", "one feature looked so (Section 8)",
          "greater", "share of SAEs (seeds x rollout sets) whose top feature fires more on incorrect "
          "generations", ("top_feature_stability",), _sae, null=0.5),
)


def claims_table(results: Results) -> list[ClaimRow]:
    """One row per claim from the chapters' results (``chapter stem -> results dict``): the organism's
    estimate from the chapter that measures it, and a real model's from every chapter that measures it
    there (:data:`steerlib.chapters.CHAPTERS`)."""
    where = claim_chapters()
    real = {key: spec.name for spec in CHAPTERS.values() for key in spec.real_claims}
    rows = []
    for c in CLAIMS:
        name = where[c.key]
        try:
            est, se = c.estimate(results.get(name, {}))
        except (TypeError, KeyError, ZeroDivisionError):  # an input missing or null (e.g. no incorrect rollouts)
            est, se = None, None
        real_est, real_se, real_verdict = None, None, None
        if c.key in real and real[c.key] in results:
            try:
                real_est, real_se = c.real_estimate(results[real[c.key]])
            except (TypeError, KeyError):
                real_est, real_se = None, None
            real_verdict = verdict(c.direction, real_est, real_se, null=c.null, paper=c.paper_value, margin=c.margin)
        rows.append(ClaimRow(c.key, c.claim, name, c.paper, c.measure, est, se,
                             verdict(c.direction, est, se, null=c.null, paper=c.paper_value, margin=c.margin),
                             real_est, real_se, real_verdict))
    return rows


def chapter_findings(chapter: str, results: Mapping[str, Any]) -> str:
    """The verdicts of the claims chapter ``chapter`` measures, as one sentence for its findings.

    Example:
        >>> chapter_findings("01_training", {"gain": 0.5, "gain_se": 0.02})[:60]
        'A vector trained at one layer raises accuracy (paper: yes (S'
    """
    spec = chapter_spec(chapter)
    if spec.real_claims:
        rows = [r for r in claims_table({chapter: results}) if r.real_lm_verdict is not None]
        measures = {c.key: c.real_measure for c in CLAIMS if c.real_measure}
        return "; ".join(f"{r.claim} (paper: {r.paper}): {r.real_lm_verdict.upper()}, {measures.get(r.key, r.measure)} "
                         f"{_num(r.real_lm, r.real_lm_se)}" for r in rows)
    rows = [r for r in claims_table({chapter: results}) if r.chapter == chapter]
    return "; ".join(f"{r.claim} (paper: {r.paper}): {r.verdict.upper()}, {r.measure} {_num(r.organism, r.organism_se)}"
                     for r in rows) or "this chapter measures none of the claims listed on the claims page"


def _num(value: float | None, se: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else " (no error yet)")


def claims_markdown(rows: list[ClaimRow], link_prefix: str = "chapters/", real_model: str = "real model") -> str:
    """The claims as a markdown table (each chapter linked); ``real_model`` heads the real model's column."""
    lines = [f"| claim | paper | organism (estimate ± SE) | verdict | chapter | {real_model} (chapter {REAL_LM[:2]}) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        real = "–" if r.real_lm_verdict is None else f"{_num(r.real_lm, r.real_lm_se)}: {r.real_lm_verdict}"
        lines.append(f"| {r.claim} | {r.paper} | {r.measure}: {_num(r.organism, r.organism_se)} | {r.verdict} | "
                     f"{{doc}}`{r.chapter[:2]} <{link_prefix}{r.chapter}>` | {real} |")
    return "\n".join(lines) + "\n"


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
    atomic_write_text(page, _PAGE.format(table=claims_markdown(rows, real_model=model), organism=ORGANISM,
                                         real_lm=REAL_LM, model=model))
    return rows


_PAGE = """# The paper's claims at a glance

<!-- Generated by `python -m steerlib.book html` from book/results/*.json (steerlib/claims.py); do not edit. -->

Each row is a claim of the paper, the number the book measures for it on the model organism with its
standard error, and a verdict by one rule: **reproduced** when the estimate lies more than two
standard errors beyond "no effect" on the paper's side, **differs** when it lies that far on the
other side, **not reproduced** when it sits within two standard errors of "no effect" while ruling
out the paper's own number, and **inconclusive** otherwise, including every estimate that does not
yet carry an error (ratios such as gain shares and normalised gains). Standard errors of differences
treat the two estimates as independent; the estimates share problems and sampling seeds, so these
are upper bounds.

The organism was built so that the first generated token decides the answer mode and the mode decides
correctness ({{doc}}`chapters/{organism}`): the last-layer and first-token rows hold on it largely by
construction and confirm that the code measures them, not the paper's finding. The last column puts
the claims it can to a real pretrained model nobody here designed, {model}
({{doc}}`chapters/{real_lm}`), by the same rule.

{table}"""
