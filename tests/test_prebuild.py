"""Chapter 02's runs as build tasks: the same parameters as the page, the same run directories."""

from __future__ import annotations

import pytest

from steerlib import prebuild
from steerlib.book import build_tasks
from steerlib.prebuild import RUN_TASKS, SWEEP_SEEDS, chapter_defaults, train_part
from steerlib.runs import RunLayout
from steerlib.selection import baselines


def test_the_tasks_build_the_seeds_the_chapter_sweeps_by_default():
    params = chapter_defaults()
    assert list(SWEEP_SEEDS) == list(range(params["seed"], params["seed"] + params["n_seeds"]))
    assert params["baselines"] is True and params["sweep_mode"] == "auto" and params["layers"] == "all"
    tasks = {t.name: t for t in build_tasks(threads=1)}
    assert set(RUN_TASKS) <= set(tasks) and set(RUN_TASKS) <= set(tasks["02_layer_curve"].needs)
    assert all(tasks[n].needs == ("organism-main",) for n in RUN_TASKS)
    with pytest.raises(ValueError, match="no run task"):
        train_part("run-sweep-seed9")


def test_an_unknown_baseline_is_one_clear_error(tiny_org, tmp_path):
    with pytest.raises(ValueError, match="no baseline LORA"):
        baselines(tiny_org, None, RunLayout(tmp_path), names=("LORA",))


def test_a_run_task_trains_what_chapter_02_then_reads_back(tiny_org, tiny_cache, tmp_path, monkeypatch):
    """Task ``run-sweep-seed1`` trains seed 1's sweep where chapter 02's own call (same arguments as its
    cell) looks for it: that call then reads it back (same vectors, no snapshot rewritten)."""
    from steerlib.chapter import setup
    from steerlib.seeds import seeded_sweeps

    monkeypatch.setenv("STEERLIB_CACHE", str(tiny_cache))
    params = {**chapter_defaults(), "model": "tiny", "steps": 2, "prompts_per_step": 2, "max_new_tokens": 6,
              "val_problems": 3, "layers": "0,1", "run_dir": str(tmp_path / "run")}
    monkeypatch.setattr(prebuild, "chapter_defaults", lambda *a, **k: params)
    assert train_part("run-all-layer") == tmp_path / "run" / "all-layer"  # a comparison run: where 02/03 read it
    out = train_part("run-sweep-seed1")
    assert out.parent == tmp_path / "run" / "seed1"
    def written():  # every file but metrics.jsonl, which a resume rewrites (trimmed to the last snapshot)
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "metrics.jsonl"}

    files = written()
    ch = setup("02_layer_curve", params)
    again = seeded_sweeps(ch.org, ch.P, ch.layout, [1], mode=params["sweep_mode"],
                          layers=ch.P.parse_layers(params["layers"]), val_problems=params["val_problems"],
                          select_on=params["select_on"])[1]
    assert written() == files and any(p.suffix == ".safetensors" for p in files)
    assert sorted(again.vectors) == [0, 1] and again.runs[0].run_dir == out
