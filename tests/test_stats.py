"""Errors for comparisons: paired differences, bootstrap ratios, seed summaries, the efficiency rows."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from steerlib.efficiency import (PARAMETERS, STATE, UPDATE, adam_state_bytes, efficiency_rows, median_update_seconds,
                                  trainable_parameters)
from steerlib.runs import RunLayout
from steerlib.seeds import seed_list, seed_summary, spread
from steerlib.stats import Estimate, bootstrap, describe, gain_share, paired_difference, paired_gain, share_estimate


def test_paired_error_is_the_sd_of_differences_and_beats_unpaired_when_problems_agree():
    rng = np.random.default_rng(0)
    hard = rng.random(2000) < 0.5  # shared difficulty: both configurations fail the hard problems
    a = (~hard | (rng.random(2000) < 0.3)).astype(float)
    b = (~hard & (rng.random(2000) < 0.9)).astype(float)
    d = paired_difference(a, b)
    assert d.estimate == pytest.approx(a.mean() - b.mean())
    assert d.se == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(2000))
    unpaired = math.sqrt(a.var(ddof=1) / 2000 + b.var(ddof=1) / 2000)
    assert d.se < unpaired
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1, 0], [1])


def test_bootstrap_error_of_a_mean_difference_matches_the_paired_formula():
    rng = np.random.default_rng(1)
    a, b = rng.random(800) < 0.7, rng.random(800) < 0.4
    boot = bootstrap({"a": a, "b": b}, lambda m: m["a"] - m["b"], n_boot=3000)
    assert boot.se == pytest.approx(paired_difference(a, b).se, rel=0.1)


def test_share_error_grows_as_the_reference_gain_shrinks_and_vanishes_into_nan():
    rng = np.random.default_rng(2)
    base = SimpleNamespace(per_problem=(rng.random(1000) < 0.3).astype(float))
    part = SimpleNamespace(per_problem=(rng.random(1000) < 0.5).astype(float))
    big = share_estimate(part, base, SimpleNamespace(per_problem=(rng.random(1000) < 0.8).astype(float)))
    small = share_estimate(part, base, SimpleNamespace(per_problem=(rng.random(1000) < 0.4).astype(float)))
    assert big.se < small.se
    flat = share_estimate(part, base, base)  # no reference gain at all
    assert math.isnan(flat.estimate) and math.isnan(flat.se)
    assert gain_share(0.5, 0.3, 0.7) == pytest.approx(0.5)
    assert paired_gain(part, base).estimate == pytest.approx(part.per_problem.mean() - base.per_problem.mean())


def test_describe_applies_the_two_se_rule():
    assert describe(Estimate(0.03, 0.01)).endswith("above zero")
    assert "not an effect" in describe(Estimate(0.019, 0.01))
    assert "no error" in describe(Estimate(0.1, float("nan")))


def test_seed_summary_and_directories():
    layout = RunLayout(Path("r/a"))
    assert seed_list(3, 2) == [3, 4] and layout.for_seed(3, base=3) == layout
    assert layout.for_seed(4, base=3).single_layer(5) == Path("r/a/seed4/single-layer-5")
    assert layout.for_seed(4, base=3).sweep() == Path("r/a/seed4/sweep-multiplexed")  # one convention for both
    with pytest.raises(ValueError):
        seed_list(0, 0)
    mean, sd = spread({0: {1: 0.5}, 1: {1: 0.7}, 2: {1: 0.6}})
    assert mean[1] == pytest.approx(0.6) and sd[1] == pytest.approx(0.1)
    s = seed_summary({0: {1: 0.5}, 1: {1: 0.7}, 2: {1: 0.6}}, {i: {1: 0.0} for i in range(3)})
    assert s.se[1] == pytest.approx(0.1 / math.sqrt(3))
    one = seed_summary({0: {1: 0.5}}, {0: {1: 0.02}})
    assert one.sd[1] == 0.0 and one.se[1] == pytest.approx(0.02)  # one seed: its sampling error


def test_efficiency_rows_count_parameters_and_adam_state():
    vec = torch.nn.Parameter(torch.zeros(96))
    run = SimpleNamespace(train=SimpleNamespace(trainable=SimpleNamespace(param_groups=lambda: [[vec]])),
                          metrics=[{"seconds_loss_backward": t} for t in (0.3, 0.1, 0.2)])
    assert trainable_parameters(run) == 96 and adam_state_bytes(96) == 768
    assert median_update_seconds(run) == pytest.approx(0.2)
    rows = efficiency_rows({"vector": run})
    assert rows["vector"] == {PARAMETERS: 96, STATE: 768, UPDATE: pytest.approx(0.2)}
    assert rows["paper, Qwen2.5-14B: full fine-tune"][PARAMETERS] == 14.7e9


def test_layer_curve_draws_each_seed():
    import matplotlib.pyplot as plt

    from steerlib import plots

    fig = plots.layer_curve({0: 0.5, 1: 0.6}, {0: 0.01, 1: 0.02}, {"base": 0.3}, title="t",
                            per_seed={0: {0: 0.48, 1: 0.61}, 1: {0: 0.52, 1: 0.59}})
    points = [c for c in fig.axes[0].collections if c.get_offsets().shape[0] == 2 and c.get_label() != "_nolegend_"]
    assert len(fig.axes[0].collections) >= 2 and points
    plt.close(fig)


def test_persistence_error_resamples_prompts():
    from steerlib.propagation import Persistence

    rng = np.random.default_rng(3)
    nan = np.full((3, 3), np.nan)
    p = Persistence(nan, nan, nan, nan)
    p.per_sequence_dv = {(0, 1): rng.normal(0.5, 0.2, 400), (0, 2): rng.normal(0.3, 0.2, 400),
                         (1, 2): rng.normal(0.4, 0.2, 400), (1, 1): np.ones(400)}  # the diagonal is ignored
    se = p.offdiag_diff_vector_se(n_boot=2000)
    assert 0.5 * 0.2 / math.sqrt(3 * 400) < se < 1.5 * 0.2 / math.sqrt(3 * 400)  # independent pairs: sd/sqrt(3n)
    assert math.isnan(Persistence(nan, nan, nan, nan).offdiag_diff_vector_se())


def test_transfer_family_summary_groups_directions_and_their_errors():
    from steerlib.transfer import TransferStudy

    rng = np.random.default_rng(4)
    acc = {"p": {"base": 0.3, "own/0": 0.8, "c/0": 0.4}, "c": {"base": 0.2, "own/0": 0.7, "p/0": 0.6},
           "u": {"base": 0.5, "own/0": 0.9, "p/0": 0.5, "c/0": 0.5}}
    acc["p"]["u/0"], acc["c"]["u/0"] = 0.3, 0.2
    results = {t: {k: SimpleNamespace(per_problem=(rng.random(2000) < a).astype(float)) for k, a in cfg.items()}
               for t, cfg in acc.items()}
    for cfg in results.values():
        for r in cfg.values():
            r.pass_at_1 = float(r.per_problem.mean())
    gains = {f"{d}->{t}": {0: gain_share(results[t][f"{d}/0"].pass_at_1, results[t]["base"].pass_at_1,
                                              results[t]["own/0"].pass_at_1)}
             for t in acc for d in acc if d != t}
    fam = TransferStudy(["p", "c", "u"], [0], results, gains).family_summary({"c": "p", "p": None, "u": None})
    assert fam["parent_to_child_mean_gain"] == pytest.approx(gains["p->c"][0])
    assert fam["child_to_parent_mean_gain"] == pytest.approx(gains["c->p"][0])
    assert fam["n_related"] == 2 and fam["n_unrelated"] == 4
    assert fam["parent_to_child_mean_gain_se"] == pytest.approx(fam["normalized_gain_se"]["p->c"])
    assert 0 < fam["related_mean_gain_se"] < max(fam["normalized_gain_se"]["p->c"], fam["normalized_gain_se"]["c->p"])


def test_the_mean_gain_over_training_seeds_has_a_t_interval_with_the_base_error_undivided():
    from steerlib.reallm import seed_gains
    from steerlib.stats import t_975

    def ev(scores):
        return SimpleNamespace(per_problem=scores, stderr=float(np.std(scores, ddof=1) / np.sqrt(len(scores))))

    base = ev([0.0, 1.0, 0.0, 1.0])  # pass@1 0.5, SE 0.289
    evals = {"base": base, "a": ev([1.0, 1.0, 0.0, 1.0]), "b": ev([1.0, 1.0, 1.0, 1.0]), "c": ev([0.0, 1.0, 0.0, 1.0])}
    g = seed_gains(evals, {0: "a", 1: "b", 2: "c"})
    assert g["per_seed"] == {"0": 0.25, "1": 0.5, "2": 0.0} and g["mean"] == 0.25
    se = np.sqrt(0.25 ** 2 / 3 + base.stderr ** 2)  # seed sd 0.25 over 3 seeds, plus the shared base's error once
    assert abs(g["mean_se"] - se) < 1e-12 and g["t"] == t_975(2) == 4.303
    assert abs(g["low"] - (0.25 - 4.303 * se)) < 1e-12 and abs(g["high"] - (0.25 + 4.303 * se)) < 1e-12
