"""Verdicts by one rule, and the generated claims page, claims.json and cost table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from steerlib.claims import CLAIMS, claims_markdown, claims_table, load_results, verdict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "book" / "results"


@pytest.mark.parametrize("args, expected", [
    (("greater", 0.10, 0.04), "reproduced"),
    (("greater", 0.07, 0.04), "inconclusive"),  # 1.75 SE: not an effect
    (("greater", -0.10, 0.04), "differs"),
    (("less", -0.10, 0.04), "reproduced"),
    (("greater", 0.2, None), "inconclusive"),  # no error, no verdict
    (("greater", float("nan"), 0.01), "inconclusive"),
    (("near", 0.02, 0.01), "reproduced"),
    (("near", 0.5, 0.1), "differs"),
    (("near", 0.05, 0.04), "inconclusive"),  # consistent with zero, but the interval leaves the margin
])
def test_the_two_standard_error_rule(args, expected):
    assert verdict(*args) == expected


def test_not_reproduced_needs_the_papers_own_number_ruled_out():
    assert verdict("greater", 0.01, 0.02, paper=0.75) == "not reproduced"
    assert verdict("greater", 0.01, 0.2, paper=0.3) == "inconclusive"
    assert verdict("greater", 0.5, 0.1, null=0.5) == "inconclusive"  # measured against its own null


def test_claims_json_and_the_page_are_generated_from_the_results():
    rows = claims_table(load_results(RESULTS))
    written = json.loads((RESULTS / "claims.json").read_text())
    assert [r["key"] for r in written] == [c.key for c in CLAIMS]
    assert all({"paper", "organism", "organism_se", "verdict", "real_lm", "real_lm_se"} <= set(r) for r in written)
    assert written == json.loads(json.dumps([r.__dict__ for r in rows])), "stale: python -m steerlib.book html"
    page = (ROOT / "book" / "claims.md").read_text()
    assert claims_markdown(rows).split("\n", 1)[1] in page  # the rows, under a header naming the real model
    numbers = set(re.findall(r"-?\d+\.\d{3}", page))
    derived = {f"{v:.3f}" for r in rows for v in (r.organism, r.organism_se, r.real_lm, r.real_lm_se) if v is not None}
    assert numbers == derived  # every number on the page is a row's estimate or error, nothing typed by hand


def test_cost_table_is_current():
    from steerlib.book import COST_DEVICES
    from steerlib.plan import table

    assert (ROOT / "book" / "costs.md").read_text() == table(devices=COST_DEVICES) + "\n"


def test_the_mean_layer_gain_keeps_the_base_models_error():
    from steerlib.claims import _mean_layer_gain

    # two layers with SE 0.02 each and a base with SE 0.01: the layers average down, the shared base does not
    est, se = _mean_layer_gain({"per_layer": {"3": 0.5, "4": 0.75}, "per_layer_stderr": {"3": 0.02, "4": 0.02},
                                "base_pass_at_1": 0.25, "base_stderr": 0.01})
    assert est == 0.375 and abs(se - (0.02 ** 2 / 2 + 0.01 ** 2) ** 0.5) < 1e-15
    assert se > 0.01  # never below the base's own error
