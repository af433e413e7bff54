"""The smollm2-135m preset end to end on its real GGUF weights, tokenizer and template (no hub):
loading, the few-shot prompt, the stop tokens, two RLOO steps and one evaluation batch."""

from __future__ import annotations

import pytest
import torch

from steerlib.data import render_prompt, split_problems, stop_token_ids
from steerlib.presets import load_model, resolve_preset


@pytest.fixture(scope="module")
def smol():
    preset = resolve_preset("smollm2-135m", prompts_per_step=2, completions_per_prompt=2, max_new_tokens=32,
                            steps=2, checkpoints=(2,))
    return preset, load_model(preset, device="cpu")


def test_an_offline_preset_without_a_source_is_one_clear_line():
    preset = resolve_preset("smollm2-135m", source=None)  # None is "not given": the preset's source stays
    assert preset.source is not None and preset.weights == "offline"
    import dataclasses

    with pytest.raises(ValueError, match="has no offline source"):
        load_model(dataclasses.replace(preset, source=None))


def test_real_tokenizer_template_and_stops(smol):
    preset, org = smol
    tok, model = org.tokenizer, org.model
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert len(tok) == 49152 and tok.padding_side == "left"
    prob = split_problems(preset, "test", 1)[0]
    prompt = render_prompt(prob, preset.template, tok)
    assert prompt.count("\\boxed{") == 2 and prompt.endswith(f"Q: {prob.problem}\nA:")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == prompt  # the real BPE round-trips the prompt
    stops = stop_token_ids(tok, preset.template)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(newline) == 1 and newline[0] in stops
    assert not any("\n" in tok.decode([i]) for i in tok(" 12 + 35 = 47.", add_special_tokens=False)["input_ids"])


def test_two_rloo_steps_and_an_evaluation_batch(smol, tmp_path):
    from steerlib.preset_eval import evaluate_configs
    from steerlib.recipes import train_vectors

    preset, org = smol
    res = train_vectors(org, preset, [29], tmp_path / "run", progress=False)
    assert len(res.metrics) == 2
    for row in res.metrics:
        assert row["mean_completion_length"] < preset.max_new_tokens  # a line break ended most answers
        assert 0.0 <= row["reward_mean"] <= 1.0
    vec = res.trainable.vectors[0].vector
    assert vec.abs().sum() > 0 and torch.isfinite(vec).all()
    evals = evaluate_configs(org, preset, {"base": [], "steered": res.trainable.vectors}, n_problems=4)
    for r in evals.values():
        assert len(r.completions) == 4 * preset.eval_benchmarks["addition"]
        assert not any("Q:" in c.text for c in r.completions)  # cut at the line break, never the next question
    assert any("\\boxed{" in c.text for c in evals["base"].completions)
