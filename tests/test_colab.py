"""Colab as a reader meets it: the install cell, its URL, and a simulated Colab runtime."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from steerlib.chapters import CHAPTERS
from steerlib.book import _clean, chapter_sources, install_cell, main, repository_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("source", chapter_sources(), ids=lambda p: p.stem)
def test_install_cell_is_the_one_written_from_the_config(source):
    import jupytext

    url = repository_url()
    expected = install_cell(source.stem)
    assert f"git+{url}" in expected and "[book]" not in expected
    for nb in (jupytext.read(source), nbformat.read(ROOT / "book" / "chapters" / f"{source.stem}.ipynb", 4)):
        cells = [c for c in nb.cells if "colab-install" in c.metadata.get("tags", [])]
        assert len(cells) == 1 and cells[0].source.strip() == expected.strip(), f"{source.stem}: run make book"
    page = nbformat.read(ROOT / "book" / "chapters" / f"{source.stem}.ipynb", 4)
    gpu = page.metadata.get("colab", {}).get("gpuType")
    assert gpu == (None if CHAPTERS[source.stem].cpu_only else "A100")


def test_publishing_writes_the_configured_url_and_cpu_metadata(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("old", metadata={"tags": ["colab-install"]})])
    nb.metadata["accelerator"] = "GPU"
    out = _clean(nb, "00_organism")
    assert out.cells[0].source == install_cell("00_organism") and "accelerator" not in out.metadata
    assert _clean(nb, "01_training").metadata["colab"]["gpuType"] == "A100"


def test_a_run_with_out_keeps_its_results_beside_the_notebook(tmp_path, monkeypatch):
    import steerlib.book as book

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "99_demo.py").write_text(
        '# %% tags=["parameters"]\nsteps: int = 1  # steps\nresults_path: str = "book/results/99_demo.json"  # out\n\n'
        "# %%\nimport json, pathlib\npathlib.Path(results_path).write_text(json.dumps({'steps': steps}))\n"
    )
    monkeypatch.setattr(book, "NOTEBOOKS", tmp_path / "notebooks")
    out = tmp_path / "runs" / "demo.ipynb"
    assert main(["chapter", "99_demo", "-p", "steps", "3", "--out", str(out)]) == 0
    assert (tmp_path / "runs" / "demo.json").read_text() == '{"steps": 3}'
    assert not (ROOT / "book" / "results" / "99_demo.json").exists()


def _chapter_imports() -> str:
    import jupytext

    lines = set()
    for source in chapter_sources():
        for cell in jupytext.read(source).cells:
            if cell.cell_type == "code" and "colab-install" not in cell.metadata.get("tags", []):
                for node in ast.parse(cell.source).body:
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        lines.add(ast.unparse(node))
    return "\n".join(sorted(lines))


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the simulation installs this checkout with git+file://")
def test_the_install_cell_in_a_simulated_colab_keeps_torch_and_the_chapters_import(tmp_path):
    """A fresh virtual environment with torch and IPython already installed stands in for Colab's runtime;
    the install cell runs there (with google.colab present and the URL pointed at this checkout's HEAD)."""
    import torch

    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, capture_output=True)  # Colab's pip is recent
    # what every Colab runtime has before the cell runs: its torch, and IPython (a notebook's kernel)
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}", "ipython"], check=True, capture_output=True)
    probe = "import torch, pathlib; print(torch.__version__, pathlib.Path(torch.__file__).stat().st_mtime_ns)"
    before = subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout

    cell = install_cell("01_training").replace(f"git+{repository_url()}", f"git+file://{ROOT}")
    fake_colab = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    run = subprocess.run([py, "-c", fake_colab + cell], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout == before

    imports = subprocess.run([py, "-c", _chapter_imports()], capture_output=True, text=True)
    assert imports.returncode == 0, imports.stderr[-3000:]
    tooling = subprocess.run([py, "-c", "import papermill"], capture_output=True, text=True)
    assert tooling.returncode != 0, "the install cell brought in the book tooling"



def test_an_install_cell_with_the_placeholder_url_stops_with_one_line(tmp_path, monkeypatch):
    import types

    from steerlib.book import PLACEHOLDER_URL

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert repository_url() == PLACEHOLDER_URL  # this repository has not been published under its own URL yet
    with pytest.raises(SystemExit, match="set STEERLIB above to this book's repository"):
        exec(install_cell("01_training"), {})  # noqa: S102 - the generated cell, as Colab runs it
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/someone/book\n")
    assert "SystemExit" not in install_cell("01_training", tmp_path)  # a real URL: no guard
