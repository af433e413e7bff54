"""A chapter run outside the book (an OUT notebook, Colab, a terminal) reads on its own: figures shown as
ordinary outputs, the prose's numbers printed; a book page only glues them."""

from __future__ import annotations

import nbformat
import pytest

from steerlib import book
from steerlib import chapter as chapter_mod
from steerlib.chapter import PAGE_ENV, setup


@pytest.fixture
def shown(monkeypatch):
    seen: list[object] = []
    monkeypatch.setattr(chapter_mod, "_glue", lambda name, value: True)  # the book tooling is there
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", seen.append)
    return seen


def test_a_figure_is_shown_outside_a_page_and_only_glued_on_one(monkeypatch, shown, tmp_path):
    ch = setup("01_training", {"preset": "organism", "run_dir": str(tmp_path / "r")}, load=False)
    monkeypatch.setenv(PAGE_ENV, "0")
    ch.figure("fig", "FIGURE")
    assert shown == ["FIGURE"]
    monkeypatch.setenv(PAGE_ENV, "1")
    ch.figure("fig", "FIGURE 2")
    assert shown == ["FIGURE"]


def test_publish_prints_the_numbers_the_prose_quotes_outside_a_page(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(chapter_mod, "_glue", lambda name, value: True)
    params = {"preset": "organism", "run_dir": str(tmp_path / "r"), "results_path": str(tmp_path / "out.json")}
    ch = setup("01_training", params, load=False)
    monkeypatch.setenv(PAGE_ENV, "0")
    ch.publish({"gain": 0.123456}, gain_text="+0.123 ± 0.010")
    out = capsys.readouterr().out
    assert "gain_text = +0.123 ± 0.010" in out and str(tmp_path / "out.json") in out
    monkeypatch.setenv(PAGE_ENV, "1")
    ch.publish({"gain": 0.123456}, gain_text="+0.123 ± 0.010")
    assert "gain_text" not in capsys.readouterr().out


@pytest.mark.parametrize("page", [True, False])
def test_execute_chapter_tells_the_kernel_whether_it_builds_a_page(monkeypatch, tmp_path, page):
    import os

    import papermill

    seen = {}

    def fake_execute(nb, path, **kwargs):
        seen["env"] = os.environ.get(PAGE_ENV)
        nbformat.write(nbformat.v4.new_notebook(), path)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.delenv(PAGE_ENV, raising=False)
    out = (book.PAGES if page else tmp_path) / "zz_probe.ipynb"
    source = book.NOTEBOOKS / "08_diffsae.py"
    monkeypatch.setattr(book, "shutil", type("S", (), {"move": staticmethod(lambda a, b: None)}))
    book.execute_chapter(source, out, {})
    assert seen["env"] == ("1" if page else "0")
    assert PAGE_ENV not in os.environ  # restored afterwards


def test_the_claims_note_prints_its_verdicts_as_plain_words_outside_a_page(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(chapter_mod, "_glue", lambda name, value: True)
    ch = setup("01_training", {"preset": "organism", "run_dir": str(tmp_path / "r")}, load=False)
    monkeypatch.setenv(PAGE_ENV, "0")
    note = ch.claims({"gain": 0.5, "gain_se": 0.02, "opener_rise": 0.3, "opener_rise_se": 0.01})
    out = capsys.readouterr().out
    assert "<span" in note and "<span" not in out and "- [holds by construction] **A vector trained" in out
