"""Verdicts by one rule, and the generated claims page, claims.json and cost table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from steerlib.claims import CLAIMS, VERDICTS, claims_markdown, claims_table, load_results, verdict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "book" / "results"


@pytest.mark.parametrize("args, kwargs, expected", [
    (("greater", 0.10, 0.04), {}, "reproduced"),
    (("greater", 0.07, 0.04), {}, "inconclusive"),  # 1.75 SE: the interval covers zero
    (("greater", -0.10, 0.04), {}, "opposite"),
    (("less", -0.10, 0.04), {}, "reproduced"),
    (("greater", 0.2, None), {}, "inconclusive"),  # no error, no verdict
    (("greater", float("nan"), 0.01), {}, "inconclusive"),
    (("greater", 1.2, 0.03), {"paper": 0.75}, "differs in size"),  # the paper's side, but not the paper's size
    (("greater", 0.8, 0.03), {"paper": 0.75}, "reproduced"),  # the interval [0.74, 0.86] covers 0.75
    (("greater", 0.01, 0.02), {"paper": 0.75}, "inconclusive"),  # covers zero: never more than inconclusive
    (("greater", 0.6, 0.04), {"null": 0.5}, "reproduced"),
    (("near", 0.02, 0.01), {}, "reproduced"),
    (("near", 0.5, 0.1), {}, "differs in size"),
    (("near", 0.05, 0.04), {}, "inconclusive"),  # consistent with zero, but the interval leaves the margin
    (("greater", 0.0, 0.0), {}, "no learning signal"),  # a run that learned nothing: every sample scored alike
    (("near", 0.0, 0.0), {}, "no learning signal"),  # not "reproduced 0.000 +/- 0.000"
])
def test_the_two_standard_error_rule(args, kwargs, expected):
    assert verdict(*args, **kwargs) == expected


def test_construction_and_disagreeing_seeds_override_a_reproduction():
    from steerlib.claims import settle

    assert settle("reproduced", construction="the organism was built so") == "holds by construction"
    assert settle("differs in size", construction="built so") == "holds by construction"
    assert settle("inconclusive", construction="built so") == "inconclusive"  # construction is no free pass
    assert settle("reproduced", units=["reproduced", "reproduced", "inconclusive"]) == "unstable"
    assert settle("reproduced", units=["reproduced"] * 3) == "reproduced"


def test_a_row_resting_on_runs_without_signal_reads_no_learning_signal():
    """A gain that reads REPRODUCED from its error alone is overruled when no training run it rests on had a
    prompt group with mixed rewards (RLOO's gradient was zero: sampling, not training, moved the number);
    one run with signal is enough to let the interval speak."""
    results = {"gain": 0.1, "gain_se": 0.02, "preset": "qwen2.5-math-1.5b",
               "signal_share_per_seed": {"0": 0.0, "1": 0.0}}
    row = {r.key: r for r in claims_table({"01_training": results})}["single_layer_gain"]
    assert row.verdict == "no learning signal"
    results["signal_share_per_seed"]["1"] = 0.25
    row = {r.key: r for r in claims_table({"01_training": results})}["single_layer_gain"]
    assert row.verdict == "reproduced"


def test_p_values_and_holms_adjustment_by_hand():
    from steerlib.claims import holm, one_sided_p

    # z = 2: one-sided p = 1 - Phi(2) = 0.02275; towards "less" the same estimate gives 0.97725
    assert abs(one_sided_p("greater", 0.04, 0.02) - 0.022750131948179) < 1e-12
    assert abs(one_sided_p("less", 0.04, 0.02) - 0.977249868051821) < 1e-12
    assert one_sided_p("greater", 0.04, None) is None
    # Holm on four p-values, one missing: sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
    assert holm([0.04, None, 0.01, 0.02]) == pytest.approx([0.04, None, 0.03, 0.04])


def test_no_organism_row_that_holds_by_construction_says_reproduced():
    rows = {r.key: r for r in claims_table(load_results(RESULTS))}
    for key in ("single_layer_gain", "first_token", "prefix_share", "orthogonal", "sae_correct"):
        assert rows[key].verdict != "reproduced", key  # the organism was built so: it says so instead
    assert all(r.verdict in VERDICTS and (r.real_lm_verdict is None or r.real_lm_verdict in VERDICTS)
               for r in rows.values())
    assert rows["prefix_share"].paper_value == 0.75 and rows["prefix_share"].paper_source == "Section 6"


def test_claims_json_and_the_page_are_generated_from_the_results():
    rows = claims_table(load_results(RESULTS))
    written = json.loads((RESULTS / "claims.json").read_text())
    assert [r["key"] for r in written] == [c.key for c in CLAIMS]
    assert all({"paper", "paper_value", "paper_source", "organism", "organism_se", "ci_low", "ci_high", "n_seeds",
                "holm_p", "verdict", "real_lm", "real_lm_se", "real_lm_holm_p"} <= set(r) for r in written)
    assert written == json.loads(json.dumps([r.__dict__ for r in rows])), "stale: python -m steerlib.book html"
    page = (ROOT / "book" / "claims.md").read_text()
    assert claims_markdown(rows).split("\n", 1)[1] in page  # the rows, under a header naming the real model
    numbers = set(re.findall(r"-?\d+\.\d{3}", page))
    derived = {f"{v:.3f}" for r in rows for v in (r.organism, r.ci_low, r.ci_high, r.real_lm, r.real_lm_ci_low,
                                                      r.real_lm_ci_high) if v is not None}
    assert numbers == derived  # every number on the page is a row's estimate or error, nothing typed by hand


def test_cost_page_is_current_and_covers_every_chapter_with_units():
    from steerlib.book import cost_page
    from steerlib.chapters import CHAPTERS

    text = (ROOT / "book" / "costs.md").read_text()
    assert text == cost_page(ROOT)
    assert "minutes on 2 CPU cores" in text and "A100 80GB: hours" in text and "A100 40GB: peak GB" in text
    for name in CHAPTERS:  # every chapter: measured in the build, and planned on a GPU unless it is CPU-only
        assert f"| {name} |" in text
    assert any("," in cell for cell in text.split("|"))  # thousands separators (the 7B rows run to thousands)


def test_the_mean_layer_gain_keeps_the_base_models_error():
    from steerlib.claims import _mean_layer_gain

    # two layers with SE 0.02 each and a base with SE 0.01: the layers average down, the shared base does not
    est, se = _mean_layer_gain({"per_layer": {"3": 0.5, "4": 0.75}, "per_layer_stderr": {"3": 0.02, "4": 0.02},
                                "base_pass_at_1": 0.25, "base_stderr": 0.01})
    assert est == 0.375 and abs(se - (0.02 ** 2 / 2 + 0.01 ** 2) ** 0.5) < 1e-15
    assert se > 0.01  # never below the base's own error


def test_the_diffsae_row_tests_its_top_feature_on_held_out_generations_by_hand():
    """The top feature is chosen on one random half and scored on the other; its error is that of a
    difference of two binomial rates, each from (x + 1) / (n + 2); the row averages SAEs, error included."""
    import math

    import torch

    from steerlib.claims import _sae
    from steerlib.diffsae import Diffs, TopKSAE, held_out_top

    sae = TopKSAE(d=2, n_features=2, k=1)
    with torch.no_grad():
        sae.w_enc.copy_(torch.eye(2))
    # feature 0 fires on every correct generation and on every third incorrect one; feature 1 on the rest
    correct = [i % 2 == 0 for i in range(60)]
    fires0 = [c or i % 6 == 1 for i, c in enumerate(correct)]
    tokens = [torch.tensor([[1.0, 0.0]]) if f else torch.tensor([[0.0, 1.0]]) for f in fires0]
    top = held_out_top(sae, Diffs(tokens, correct, None, []), seed=3)
    held = torch.randperm(60, generator=torch.Generator().manual_seed(3))[30:].tolist()
    ok = [i for i in held if correct[i]]
    bad = [i for i in held if not correct[i]]
    x_ok, x_bad = sum(fires0[i] for i in ok), sum(fires0[i] for i in bad)
    q_ok, q_bad = (x_ok + 1) / (len(ok) + 2), (x_bad + 1) / (len(bad) + 2)
    assert top.feature == 0 and top.tracks == "correct"
    assert top.difference == pytest.approx(x_ok / len(ok) - x_bad / len(bad))
    assert top.se == pytest.approx(math.sqrt(q_ok * (1 - q_ok) / len(ok) + q_bad * (1 - q_bad) / len(bad)))
    assert _sae({"top_feature_stability": [{"difference": 0.6, "se": 0.04}, {"difference": 0.8, "se": 0.02}]}) \
        == pytest.approx((0.7, 0.03))


def test_the_orthogonal_and_pair_gaps_by_hand():
    from steerlib.propagation import pair_gap
    from steerlib.selection import orthogonal_gap

    gap = orthogonal_gap({"original": 0.9, "orthogonal 1": 0.7, "orthogonal 2": 0.4}, {"original": 0.03,
                                                                                      "orthogonal 1": 0.04})
    assert gap.estimate == pytest.approx(0.2) and gap.se == pytest.approx(0.05)  # sqrt(0.03^2 + 0.04^2)
    # three layers: pair sums 0.6, 0.5, 0.9 against better singles 0.7, 0.8, 0.8 -> -0.1, -0.3, 0.1
    g = pair_gap([[0.7, 0.6, 0.5], [0.6, 0.3, 0.9], [0.5, 0.9, 0.8]])
    assert g.estimate == pytest.approx(-0.1) and g.se == pytest.approx(0.2 / 3 ** 0.5)
