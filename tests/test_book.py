"""book.py: parameter checking, execution, and never publishing a failed chapter."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from steerlib.book import ChapterError, chapter_parameters, execute_chapter, main

SOURCE = """# %% [markdown]
# # A chapter

# %% tags=["parameters"]
steps: int = 2  # how many steps
fail: bool = False  # raise on purpose

# %%
if fail:
    raise ValueError("asked to fail")
print("steps", steps * 10)
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "99_demo.py"
    path.write_text(SOURCE)
    return path


def test_parameters_cell_is_documented(source):
    params = chapter_parameters(source)
    assert set(params) == {"steps", "fail"}
    assert params["steps"]["inferred_type_name"] == "int" and params["steps"]["help"] == "how many steps"


def test_unknown_parameter_fails_before_executing(source, tmp_path):
    out = tmp_path / "out.ipynb"
    with pytest.raises(ChapterError, match="unknown parameter\\(s\\) stpes; this chapter takes: fail, steps"):
        execute_chapter(source, out, {"stpes": 3})
    assert not out.exists()


def test_execution_injects_parameters_and_cleans_metadata(source, tmp_path):
    out = execute_chapter(source, tmp_path / "out.ipynb", {"steps": 3}, cwd=tmp_path)
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "steps 30" in text
    assert nb.metadata["colab"]["gpuType"] == "A100" and nb.metadata["accelerator"] == "GPU"
    assert all("execution" not in c.metadata and "papermill" not in c.metadata for c in nb.cells)


def test_failed_chapter_is_never_published(source, tmp_path):
    out = tmp_path / "published.ipynb"
    out.write_text("previous page")
    with pytest.raises(ChapterError, match="ValueError: asked to fail"):
        execute_chapter(source, out, {"fail": True}, cwd=tmp_path)
    assert out.read_text() == "previous page"


def test_cli_names_an_unknown_chapter(capsys):
    assert main(["chapter", "no_such_chapter"]) == 1
    assert "no chapter 'no_such_chapter'" in capsys.readouterr().err


def test_prose_is_refreshed_without_execution_but_code_changes_are_refused(source, tmp_path):
    from steerlib.book import refresh_prose

    page = execute_chapter(source, tmp_path / "page.ipynb", {"steps": 3}, cwd=tmp_path)
    source.write_text(source.read_text().replace("# # A chapter", "# # A better title").replace(
        "# %%\nif fail", '# %% tags=["hide-input"]\nif fail'))
    assert refresh_prose(source, page) and not refresh_prose(source, page)
    nb = nbformat.read(page, as_version=4)
    assert nb.cells[0].source == "# A better title" and nb.cells[-1].metadata["tags"] == ["hide-input"]
    assert "steps 30" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)  # outputs kept
    source.write_text(source.read_text().replace("steps * 10", "steps * 100"))
    with pytest.raises(ChapterError, match="execute the chapter again"):
        refresh_prose(source, page)


def test_pages_that_load_mathjax_from_a_cdn_are_found(tmp_path):
    from steerlib.book import network_mathjax

    (tmp_path / "sub").mkdir()
    (tmp_path / "local.html").write_text('<script defer="defer" src="../_static/mathjax/tex-chtml.js"></script>')
    (tmp_path / "sub" / "cdn.html").write_text(
        '<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>')
    (tmp_path / "protocol.html").write_text("<script src='//cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js'>")
    assert network_mathjax(tmp_path) == ["protocol.html", "sub/cdn.html"]


def test_the_book_serves_its_own_mathjax():
    import importlib

    import yaml

    from steerlib.chapters import ROOT

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    ext = importlib.import_module("sphinx-mathjax-offline")  # the book extra installs it (no network at build time)
    assert (Path(ext.__file__).parent / "static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
