"""Chapters: smoke runs through the book pipeline, source/page sync, and the HTML build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from steerlib.book import chapter_sources, execute_chapter

ROOT = Path(__file__).resolve().parent.parent
SMOKE = {
    "00_organism": {"organisms": "tiny", "n_problems": 16},
    "01_training": {
        "model": "tiny",
        "n_seeds": 2,
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
    },
    "02_layer_curve": {
        "model": "tiny",
        "n_seeds": 2,
        "noise_seeds": 1,
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
    },
    "03_persistence": {
        "model": "tiny",
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
        "persistence_prompts": 4,
        "n_orthogonal": 1,
        "n_seeds": 2,  # chapter 02's smoke sweeps (seeds 0 and 1), read back
    },
    "04_logit_lens": {
        "model": "tiny",
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
        "shift_prompts": 4,
        "n_seeds": 2,  # chapter 02's smoke sweeps (seeds 0 and 1), read back
    },
    "05_attention_ablation": {
        "model": "tiny",
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
        "js_prompts": 4,
        "n_seeds": 2,  # chapter 02's smoke sweeps (seeds 0 and 1), read back
    },
    "06_transfer": {
        "model": "tiny",
        "targets": "tiny-tuned",
        "layers": "all",
        "n_seeds": 2,  # chapter 02's smoke sweeps (seeds 0 and 1); the tuned model's own vectors with seed 1
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
    },
    "07_adaptive": {
        "model": "tiny",
        "steps": 2,
        "eval_problems": 8,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
        "magnitude_layers": "0,1",
        "factors": "-1,0,1,10",
        "magnitude_prompts": 4,
        "n_seeds": 2,  # the last layer's adapter trained with two seeds
    },
    "08_diffsae": {
        "model": "tiny",
        "steps": 2,
        "val_problems": 8,
        "prompts_per_step": 4,
        "max_new_tokens": 12,
        "sae_prompts": 8,
        "n_features": 8,
        "k": 2,
        "sae_steps": 20,
        "top_n": 2,
        "sae_seeds": 2,
        "rollout_sets": 2,
        "n_seeds": 2,  # chapter 02's smoke sweeps (seeds 0 and 1), read back
    },
    "09_real_lm": {  # the real Qwen2.5-Coder-0.5B (its PyPI GGUF): one step per vector, two of everything
        "steps": 1,
        "n_seeds": 2,
        "eval_problems": 2,
        "val_problems": 2,
        "prompts_per_step": 2,
        "completions_per_prompt": 2,
        "max_new_tokens": 8,
    },
}


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    from steerlib.sources import cache_dir

    tmp = tmp_path_factory.mktemp("chapters")
    models = cache_dir()  # model files fetched from PyPI are shared with the user's cache, not fetched again
    models.mkdir(parents=True, exist_ok=True)
    (tmp / "cache").mkdir()
    (tmp / "cache" / models.name).symlink_to(models, target_is_directory=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("STEERLIB_CACHE", str(tmp / "cache"))
    yield tmp
    mp.undo()


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_chapter_smoke_run(name, smoke_env):
    params = dict(SMOKE[name], results_path=str(smoke_env / f"{name}.json"))
    if name != "00_organism":
        params["run_dir"] = str(smoke_env / "runs")
    out = execute_chapter(ROOT / "notebooks" / f"{name}.py", smoke_env / f"{name}.ipynb", params)
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    results = json.loads((smoke_env / f"{name}.json").read_text())
    published = json.loads((ROOT / "book" / "results" / f"{name}.json").read_text())
    from steerlib.organism import ORGANISMS

    missing = set(published) - set(results) - set(ORGANISMS)  # chapter 00 nests one entry per organism measured
    assert not missing, f"the smoke run did not write {sorted(missing)}"  # same keys as the published results


def test_every_chapter_has_a_smoke_run():
    assert {p.stem for p in chapter_sources()} == set(SMOKE)


def _code(cells):
    return [
        c.source.strip()
        for c in cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


@pytest.mark.parametrize("source", chapter_sources(), ids=lambda p: p.stem)
def test_published_page_matches_its_source(source):
    import jupytext

    page = ROOT / "book" / "chapters" / f"{source.stem}.ipynb"
    assert page.exists(), f"{page} is missing: run make book"
    published = nbformat.read(page, as_version=4)
    assert _code(published.cells) == _code(jupytext.read(source).cells), f"{page.name} is stale: run make book"
    prose = [c.source for c in published.cells if c.cell_type == "markdown"]
    assert prose == [c.source for c in jupytext.read(source).cells if c.cell_type == "markdown"], (
        f"{page.name}: its prose is stale: python -m steerlib.book prose")
    stderr = [o for c in published.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"]
    assert not stderr, f"{page.name} carries {len(stderr)} stderr outputs (progress bars, warnings): run make book"
    errors = [o for c in published.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors and not any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in published.cells)
    assert any(  # figures are glued (shown with a caption by the page's {glue:figure}), or displayed
        o.get("data", {}).get("image/png") or o.get("data", {}).get("application/papermill.record/image/png")
        for c in published.cells if c.cell_type == "code" for o in c.outputs
    ), "a chapter without figures"


def test_html_builds_with_warnings_as_errors(tmp_path):
    out = tmp_path / "site"
    shutil.copytree(ROOT, out, ignore=shutil.ignore_patterns(".venv", "_build", ".git", "runs", "__pycache__"))
    exe = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(exe), "build", str(out), "-n", "-W", "--keep-going"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from steerlib.book import repository_url
    from steerlib.pagecheck import colab_links, page_problems

    for source in chapter_sources():
        html = (out / "_build" / "html" / "book" / "chapters" / f"{source.stem}.html").read_text()
        assert "<img" in html and "Traceback" not in html, source.stem
        links = colab_links(html)
        assert links and all(repository_url().split("github.com/")[1] + "/blob/" in h for h in links), links
    problems = {page.relative_to(out).as_posix(): page_problems(page.read_text())
                for page in (out / "_build" / "html" / "book").rglob("*.html")}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_page_checks_catch_placeholders_nan_and_uncaptioned_figures():
    from steerlib.pagecheck import page_problems

    good = ('<article><p>gain 0.12 in $s_{L}$</p><figure><img src="a.png"><figcaption>Fig. 1</figcaption></figure>'
            '<pre>{NAME} nan</pre></article>')
    assert page_problems(good) == []
    bad = '<article><p>layer {PEN} gives nan</p><img src="b.png"><figure><img src="c.png"></figure></article>'
    assert page_problems(bad) == ["placeholder {PEN} in the text", "'nan' in the text",
                                  "a figure without a caption: b.png", "a figure without a caption: c.png"]


@pytest.mark.parametrize("source", chapter_sources(), ids=lambda p: p.stem)
def test_each_pages_claims_note_follows_its_results_under_the_current_rules(source):
    from steerlib.book import claims_note_of

    page = nbformat.read(ROOT / "book" / "chapters" / f"{source.stem}.ipynb", as_version=4)
    glued = [o["data"].get("application/papermill.record/text/markdown") for c in page.cells
             if c.cell_type == "code"
             for o in c.outputs if o.get("metadata", {}).get("scrapbook", {}).get("name") == "claims_note"]
    assert glued in ([], [claims_note_of(source.stem)]), "stale verdicts: python -m steerlib.book prose"
