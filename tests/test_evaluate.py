"""evaluate.py: pass@1 sampling, forced prefixes and routed (multi-vector) evaluation."""

from __future__ import annotations

import math

import dataclasses

import torch

from steerlib.evaluate import evaluate, generate, results_table
from steerlib.steering import SteeringVector
from steerlib.world import WORKED_OPENER, sample_problems


def _data(n=12):
    probs = sample_problems(n, "test", 0)
    return [p.prompt for p in probs], [str(p.answer) for p in probs]


def test_pass_at_1_counts_samples_and_first_tokens(tiny_org):
    prompts, answers = _data()
    res = evaluate(tiny_org.model, tiny_org.tokenizer, prompts, answers, n=3, max_new_tokens=20)
    assert len(res.completions) == 36 and res.n_problems == 12 and res.samples_per_problem == 3
    assert sum(res.first_tokens.values()) == 36
    assert math.isclose(sum(share for _, share in res.top_first_tokens(200)), 1.0)
    assert 0.0 <= res.pass_at_1 <= 1.0
    again = evaluate(tiny_org.model, tiny_org.tokenizer, prompts, answers, n=3, max_new_tokens=20)
    assert [c.text for c in again.completions] == [c.text for c in res.completions]  # seeded


def test_prefix_is_forced_and_scored(tiny_org):
    prompts, answers = _data(4)
    res = evaluate(tiny_org.model, tiny_org.tokenizer, prompts, answers, n=2, prefix=WORKED_OPENER, max_new_tokens=5)
    assert res.first_token_share(WORKED_OPENER) == 1.0
    assert all(c.text.startswith(WORKED_OPENER) for c in res.completions)


def test_reward_scoring_uses_the_last_box(tiny_org, monkeypatch):
    import steerlib.evaluate as ev
    from steerlib.evaluate import Completion

    fake = [
        Completion(0, " Step: \\boxed{8} so the answer is \\boxed{5}.", " Step", 8),
        Completion(1, "\\boxed{8} then \\boxed{7}", " The", 3),
    ]
    monkeypatch.setattr(ev, "generate", lambda *a, **k: fake)
    res = evaluate(tiny_org.model, tiny_org.tokenizer, ["a", "b"], ["5", "8"])
    assert res.per_problem == [1.0, 0.0] and res.pass_at_1 == 0.5
    assert math.isclose(res.stderr, 0.5)


def test_a_cut_completion_scores_zero_when_the_preset_says_so(tiny_org, monkeypatch):
    import steerlib.evaluate as ev
    from steerlib.evaluate import Completion

    fake = [Completion(0, "so \\boxed{5} and then", "so", 8, finished=False), Completion(1, "\\boxed{8}", "x", 3)]
    monkeypatch.setattr(ev, "generate", lambda *a, **k: [dataclasses.replace(c) for c in fake])
    text = evaluate(tiny_org.model, tiny_org.tokenizer, ["a", "b"], ["5", "8"])
    cut = evaluate(tiny_org.model, tiny_org.tokenizer, ["a", "b"], ["5", "8"], cut_is_wrong=True)
    assert text.per_problem == [1.0, 1.0] and cut.per_problem == [0.0, 1.0]
    assert cut.cut_rate == 0.5


def test_generate_marks_cut_completions(tiny_org):
    prompts, _ = _data(6)
    comps = generate(tiny_org.model, tiny_org.tokenizer, prompts, n=2, max_new_tokens=3)
    cut = [c for c in comps if not c.finished]
    assert cut and all(c.n_tokens == 3 for c in cut)  # 3 tokens is too few for the organism's answers


def test_routed_generation_equals_one_vector_at_a_time(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, _ = _data(6)
    g = torch.Generator().manual_seed(0)
    vecs = [
        SteeringVector(torch.randn(model.config.hidden_size, generator=g) * 3, layer, route=layer)
        for layer in range(model.config.num_hidden_layers)
    ]
    routes = [0, 1, -1, 1, 0, -1]
    routed = generate(model, tok, prompts, greedy=True, max_new_tokens=12, vectors=vecs, routes=routes)
    for layer in (-1, 0, 1):
        idx = [i for i, r in enumerate(routes) if r == layer]
        mine = [SteeringVector(v.vector, v.layer) for v in vecs if v.route == layer]
        alone = generate(model, tok, [prompts[i] for i in idx], greedy=True, max_new_tokens=12, vectors=mine or None)
        assert [routed[i].text for i in idx] == [c.text for c in alone]
    plain = generate(model, tok, prompts, greedy=True, max_new_tokens=12)
    assert any(routed[i].text != plain[i].text for i in (0, 1, 3, 4))  # the vectors mattered


def test_results_table_has_average(tiny_org):
    prompts, answers = _data(4)
    r = evaluate(tiny_org.model, tiny_org.tokenizer, prompts, answers, n=1, max_new_tokens=4)
    other = dataclasses.replace(r, pass_at_1=r.pass_at_1 + 0.5, n_problems=7)
    df = results_table({"a": r, "b": other})
    assert list(df.index) == ["a", "b", "Average"]
    assert math.isclose(df.loc["Average", "pass@1"], r.pass_at_1 + 0.25) and df.loc["Average", "problems"] == 4 + 7


def test_routed_configurations_equal_separate_runs(tiny_org):
    from steerlib.evaluate import evaluate_routed

    model, tok = tiny_org.model, tiny_org.tokenizer
    prompts, answers = _data(6)
    d = model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    a = SteeringVector(torch.randn(d, generator=g) * 4, 0)
    b = SteeringVector(torch.randn(d, generator=g) * 4, 1, scale=0.5)
    configs = {"base": [], "a": [a], "a+b": [a, b]}
    routed = evaluate_routed(model, tok, prompts, answers, configs, greedy=True, max_new_tokens=10)
    for name, vecs in configs.items():
        alone = evaluate(model, tok, prompts, answers, greedy=True, max_new_tokens=10, vectors=vecs or None)
        assert [c.text for c in routed[name].completions] == [c.text for c in alone.completions], name
        assert [c.prompt_index for c in routed[name].completions] == list(range(6))
    assert a.route is None and b.route is None  # the caller's vectors are untouched
    assert [c.token_ids for c in routed["a"].completions] != [c.token_ids for c in routed["base"].completions]
