"""GSM-Symbolic problems (steerlib.gsm_symbolic): the template split, the instance order, the prompts."""

from __future__ import annotations

import json

import pytest

from steerlib import gsm_symbolic
from steerlib.gsm_symbolic import SPLIT_COUNTS, problems, template_split


def _asset(tmp_path, templates=range(100), per=3):
    header = {"templates": list(templates), "left_out": {}}
    rows = [{"template": t, "instance": i, "gsm8k_id": 1000 + t, "question": f"Story {t}, variant {i}: how many?",
             "answer": str(t * 10 + i)} for t in templates for i in range(per)]
    path = tmp_path / "gsm.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [header, *rows]) + "\n")
    return path


def test_no_template_is_in_two_splits_and_the_counts_are_the_preregistered_ones():
    split = template_split(range(100))
    assert {k: len(v) for k, v in split.items()} == SPLIT_COUNTS
    seen = [t for ids in split.values() for t in ids]
    assert sorted(seen) == list(range(100))  # every template in exactly one split
    assert template_split(reversed(range(100))) == split  # the order given does not matter
    smaller = template_split([t for t in range(100) if t not in (3, 7)])  # templates left out: same proportions
    assert sum(map(len, smaller.values())) == 98 and not set(smaller["train"]) & set(smaller["test"])


def test_problems_come_from_their_split_only_and_span_its_templates_first(tmp_path):
    path = _asset(tmp_path)
    split = template_split(range(100))
    for name in SPLIT_COUNTS:
        probs = problems(name, path=path)
        assert {p.template for p in probs} == set(split[name]) and len(probs) == 3 * len(split[name])
    first = problems("test", 30, path=path)
    assert len({p.template for p in first}) == 30 and all(p.instance == 0 for p in first)
    assert problems("test", 31, path=path)[30].instance == 1
    with pytest.raises(ValueError, match="split must be one of"):
        problems("dev", path=path)


def test_the_shipped_instances_follow_the_split_and_have_numeric_answers():
    if not gsm_symbolic.ASSET.exists():
        pytest.skip("the instances file is not generated yet (python -m steerlib.gsm_symbolic)")
    header, rows = gsm_symbolic.read_asset()
    assert header["split"] == template_split(header["templates"])
    assert {r["template"] for r in rows} == set(header["templates"])
    assert all(r["answer"].lstrip("-").replace(".", "", 1).isdigit() for r in rows)


def test_a_gsm_preset_splits_through_the_data_layer(tmp_path, monkeypatch):
    from steerlib.data import split_prompts
    from steerlib.presets import resolve_preset

    monkeypatch.setattr(gsm_symbolic, "ASSET", _asset(tmp_path))
    preset = resolve_preset("organism", train_source="gsm_symbolic", template="qwen_math")
    prompts, answers = split_prompts(preset, None, "validation", 4)
    assert len(prompts) == 4 and all("Please reason step by step" in p and "Story" in p for p in prompts)
    assert answers == [p.answer for p in problems("validation", 4)]


def test_the_shipped_instances_keep_test_templates_out_of_training():
    from steerlib.gsm_symbolic import problems, read_asset

    header, rows = read_asset()
    assert len(header["templates"]) + len(header["left_out"]) == 100 and len(rows) == 40 * len(header["templates"])
    train, val, test = ({p.template for p in problems(s)} for s in ("train", "validation", "test"))
    assert train and val and test and not (train & test or train & val or val & test)
    assert all(p.answer for p in problems("test", 50))
