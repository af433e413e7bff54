"""presets.py: complete parameter sets, one-line errors."""

from __future__ import annotations

import pytest

from steerlib.presets import PRESETS, resolve_preset


def test_paper_presets_follow_the_paper():
    q = resolve_preset("qwen2.5-math-7b")
    assert (q.prompts_per_step, q.completions_per_prompt, q.steps) == (128, 16, 314)
    assert q.checkpoints == (106, 159, 212, 265, 314)
    assert q.eval_benchmarks == {"aime24": 32, "aime25": 32, "amc23": 32, "math500": 1, "minerva": 1, "olympiad": 1}
    assert [q.lr_for(layer) for layer in (0, 1, 15, 18, 21, 23, 24, 27)] == [
        3e-3,
        7e-3,
        1e-2,
        3e-2,
        1e-1,
        1e-2,
        1e-2,
        1e-1,
    ]
    llama = resolve_preset("llama3.1-8b-instruct")
    assert llama.n_layers == 32 and llama.lr_for(30) == 7e-3 and llama.lr_for(11) == 2e-3
    assert all(layer in llama.layer_lr for layer in range(32))
    assert all(layer in q.layer_lr for layer in range(28))


def test_overrides_and_errors():
    p = resolve_preset("organism", steps=5, layer=None)
    assert p.steps == 5 and p.default_layer == 5
    with pytest.raises(ValueError, match="unknown preset 'gpt5'; choose one of organism"):
        resolve_preset("gpt5")
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) stesp for preset organism"):
        resolve_preset("organism", stesp=3)
    with pytest.raises(ValueError, match="layer 6 is out of range for organism \\(6 layers: 0..5\\)"):
        resolve_preset("organism", layer=6)
    with pytest.raises(ValueError, match="completions_per_prompt must be >= 2"):
        resolve_preset("organism", completions_per_prompt=1)


def test_every_preset_resolves():
    for name in PRESETS:
        p = resolve_preset(name)
        assert p.lr_for(p.default_layer) > 0 and p.checkpoints[-1] == p.steps


def test_fewer_steps_rescale_the_snapshots():
    p = resolve_preset("qwen2.5-math-7b", steps=30)
    assert p.checkpoints == (10, 15, 20, 25, 30)
    with pytest.raises(ValueError, match="checkpoints"):
        resolve_preset("organism", steps=10, checkpoints=(5, 20))
