"""Chapter 09's run made elsewhere (a GPU lease), read back from its committed results; and the GPU
presets' extra layers."""

from __future__ import annotations

import json
import math

import pytest

from steerlib.plan import chapter_plan
from steerlib.presets import resolve_preset
from steerlib.reallm import DeviceRun


def _results(rates: list[float]) -> dict:
    configs = ["+ s23", "+ s22", "Skip-Attn", "Skip-Layer", "MLP-only"]
    return {
        "provenance": {"training": {"device": "GPU X", "date": "2026-01-02 10:00 UTC", "commit": "aaa",
                                    "torch": "2", "transformers": "5"},
                       "evaluation": {"device": "GPU X", "date": "2026-01-02 11:00 UTC", "commit": "bbb",
                                      "torch": "2", "transformers": "5"}},
        "layers": [23, 22], "steps_trained": 2, "prompts_per_step": 4, "completions_per_prompt": 2,
        "max_new_tokens": 10, "n_test_problems": 100,
        "training": [{"step": 0, "reward_mean": 0.5, "prompt_pass_rates": rates, "mean_completion_length": 9.0,
                      "vector_norms": {"22:resid_post": 1.0, "23:resid_post": 2.0}, "seconds_generation": 3.0}],
        "pass_at_1": {"base": 0.1, **dict.fromkeys(configs, 0.2)}, "stderr": dict.fromkeys(["base", *configs], 0.03),
        "cut_rate": dict.fromkeys(["base", *configs], 0.0), "mean_length": dict.fromkeys(["base", *configs], 9.0),
        "gain": {"+ s23": 0.10, "+ s22": 0.01, "Skip-Attn": 0.0, "Skip-Layer": -0.02, "MLP-only": 0.05},
        "gain_se": dict.fromkeys(configs, 0.04),
        "first_tokens": {"base": {"To": 0.5}, "+ s23": {"To": 0.7}, "+ s22": {"To": 0.6}},
        "process_word_ranks": {"s23": {"To": 5, "Let": 3}, "s22": {"To": 9, "Let": 1}},
        "first_token_kl_share": 0.2, "mean_length_steered": 10.0,
        "prefix_share_rise": 0.2, "prefix_share_rise_se": 0.05,
        "prefix_token": "To", "prefix_pass_at_1": 0.15, "prefix_gain_share": 0.5, "prefix_gain_share_se": 0.3,
        "penultimate_shares": {k: {"share": 1.0, "se": 1.0, "text": "1.00 ± 1.00"}
                               for k in ("Skip-Attn", "Skip-Layer", "MLP-only", "V-head patch")},
    }


def test_device_run_reads_its_file_and_computes_what_the_page_quotes(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(_results([0.0, 0.5, 1.0, 0.25])))
    run = DeviceRun.read("run", tmp_path)
    assert "GPU X, 2026-01-02" in run.label and "aaa" in run.label and "bbb" in run.label
    rows = run.training_rows()
    assert rows.loc[1, "groups with signal"] == 0.5  # 0.5 and 0.25 are strictly inside (0, 1)
    assert rows.loc[1, "|s23|"] == 2.0
    table = run.pass_table()
    assert list(table.index) == ["base", "+ s23", "+ s22", "Skip-Attn", "Skip-Layer", "MLP-only"]
    assert table.loc["+ s23", "gain over base (paired)"] == "0.100 ± 0.040"
    glue = run.glue()
    assert all(k.startswith("h200_") for k in glue)
    assert glue["h200_last_gain"].startswith("+0.100 ± 0.040, more than two")
    assert glue["h200_before"] == 0.5 and glue["h200_after"] == 0.7 and glue["h200_best_word_last"] == "3"
    assert math.isclose(glue["h200_kl_uniform"], 0.1)


def test_device_run_holm_adjusts_the_five_gains_read_together(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(_results([0.5])))
    ps = DeviceRun.read("run", tmp_path).holm_p()
    assert set(ps) == {"last", "pen", "skip_attn", "skip_layer", "mlp_only"}
    raw_last = 0.5 * math.erfc(0.10 / 0.04 / math.sqrt(2))  # one-sided p of +0.10 ± 0.04
    assert math.isclose(ps["last"], 5 * raw_last)  # the smallest of five: times five
    assert all(0 <= p <= 1 for p in ps.values())


def test_the_committed_h200_run_names_its_device_and_commits():
    run = DeviceRun.read("09_real_lm_h200")
    assert run.results["provenance"]["evaluation"]["device"] == "NVIDIA H200"
    assert run.results["steps_trained"] == len(run.results["training"]) >= 1
    assert set(run.results["gain"]) <= set(run.results["pass_at_1"])


def test_gpu_presets_train_six_layers_with_the_last_two_and_the_cpu_tier_three():
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        p = resolve_preset(name)
        layers = {p.n_layers - 1, p.n_layers - 2, p.n_layers // 2, *p.extra_layers}
        assert len(layers) == 6
    assert resolve_preset("qwen2.5-coder-0.5b-cpu").extra_layers == ()


def test_extra_layers_parameter_is_parsed_checked_and_planned():
    assert resolve_preset("qwen2.5-coder-0.5b", extra_layers="3-4,9").extra_layers == (3, 4, 9)
    assert resolve_preset("qwen2.5-coder-0.5b", extra_layers="none").extra_layers == ()
    with pytest.raises(ValueError, match="out of range"):
        resolve_preset("qwen2.5-coder-0.5b", extra_layers="24")
    with pytest.raises(ValueError, match="comma-separated"):
        resolve_preset("qwen2.5-coder-0.5b", extra_layers="six")
    six = chapter_plan("09_real_lm", {"preset": "qwen2.5-coder-0.5b", "n_seeds": 3}, "a100-80gb")
    three = chapter_plan("09_real_lm", {"preset": "qwen2.5-coder-0.5b", "n_seeds": 3, "extra_layers": "none"},
                         "a100-80gb")
    assert all(six.seconds[part] > three.seconds[part] for part in ("training", "evaluation"))


def test_training_table_reads_first_and_last_step_and_the_groups_with_signal():
    from types import SimpleNamespace

    from steerlib.reallm import training_table

    def row(reward: float, rates: list[float], norm: float) -> dict:
        return {"reward_mean": reward, "prompt_pass_rates": rates, "grad_norms": [0.1], "seconds_generation": 2.0,
                "vector_norms": {"23:resid_post": norm}, "seconds_loss_backward": 1.0}

    run = SimpleNamespace(metrics=[row(0.1, [0.0, 0.5], 1.0), row(0.3, [0.5, 0.5], 2.0)], lr=0.1, step=2)
    t = training_table({23: run})
    assert (t.loc[23, "reward, first step"], t.loc[23, "reward, last step"]) == (0.1, 0.3)
    assert t.loc[23, "groups with signal"] == 0.75 and t.loc[23, "final |s|"] == 2.0
