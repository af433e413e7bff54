"""The book pipeline: execute chapter sources with papermill, publish them, build the HTML.

Chapter sources are jupytext ``py:percent`` files ``notebooks/NN_name.py``; their executed copies are
``book/chapters/NN_name.ipynb``. A chapter is executed from its source with papermill (parameter names
checked against its ``parameters`` cell first: papermill alone only warns on unknown names), and only
a run that finished without error is published: a failing run names the failing cell and leaves the
published page untouched.

Command line (what ``make book`` and ``make chapter`` call)::

    python -m steerlib.book build [--jobs 2]            # organisms and chapters, 2 at a time; then the HTML
    python -m steerlib.book build --skip 09_real_lm     # the same, keeping one chapter as published
    python -m steerlib.book chapter 02_layer_curve -p preset qwen2.5-math-1.5b --out run.ipynb
    python -m steerlib.book html                        # HTML from the committed chapters only
    python -m steerlib.book sync                        # write _config.yml's URL into the install cells
    python -m steerlib.book prose                       # copy edited prose and cell tags into the pages

The repository URL is one setting, ``repository.url`` in ``_config.yml``: the build writes it into every
chapter's Colab install cell (the cell tagged ``colab-install``), in the sources and the published pages.
A run with parameters and ``--out`` writes its results next to the output notebook, never into
``book/results/``.

Example:
    >>> execute_chapter("notebooks/01_training.py", "out.ipynb", {"steps": 2})  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlib.chapter import value_has_type
from steerlib.chapters import CHAPTERS, NOTEBOOKS, PAGES, ROOT, chapter_sources, read_source

__all__ = [
    "ChapterError",
    "chapter_sources",
    "chapter_parameters",
    "check_parameters",
    "claims_note_of",
    "value_has_type",
    "execute_chapter",
    "build_html",
    "network_mathjax",
    "repository_url",
    "install_cell",
    "sync_install_cells",
    "refresh_prose",
    "build_tasks",
    "build_all",
    "main",
]

_TIMING_KEYS = ("execution", "papermill", "ExecuteTime")
BUILD_TIMES = ROOT / "book" / "build_times.json"
INSTALL_TAG = "colab-install"
#: ``repository.url`` until whoever publishes the book sets it (README, "Publish your copy"): while it is
#: there, a Colab install cell stops with one line instead of failing inside pip.
PLACEHOLDER_URL = "https://github.com/steerlib/small-vectors-book"


class ChapterError(RuntimeError):
    """A chapter could not be executed (bad parameters or a failing cell)."""


def repository_url(root: Path = ROOT) -> str:
    """``repository.url`` from ``_config.yml`` (the one place the repository's address lives)."""
    import yaml

    url = (yaml.safe_load((root / "_config.yml").read_text()).get("repository") or {}).get("url")
    if not url:
        raise ChapterError("_config.yml has no repository.url")
    return str(url).rstrip("/")


def install_cell(chapter: str, root: Path = ROOT) -> str:
    """The source of chapter ``chapter``'s Colab install cell: steerlib's core (plus the chapter's
    extra, if any) from the repository in ``_config.yml``; Colab's torch, transformers and the rest
    are kept (pip only adds what is missing). It also says how to log in for gated models and how to
    keep run directories on Google Drive.

    Example:
        >>> "git+" + repository_url() in install_cell("01_training")
        True
    """
    extra = CHAPTERS[chapter].extra if chapter in CHAPTERS else None
    url = repository_url(root)
    spec = f"steerlib{f'[{extra}]' if extra else ''} @ git+{url}"
    tail = url.split("github.com")[-1]
    guard = [] if url != PLACEHOLDER_URL else [
        f'    if STEERLIB.endswith("{tail}"):  # the placeholder of _config.yml',
        '        raise SystemExit("set STEERLIB above to this book\'s repository (_config.yml holds a placeholder)")',
    ]
    return "\n".join([
        "# Colab: installs steerlib from this book's repository; Colab's own torch and libraries are kept.",
        "# Gated models (llama3.1-8b-instruct): accept the licence on huggingface.co, then",
        "#   from huggingface_hub import login; login()     (or add HF_TOKEN under Colab's Secrets)",
        "# Keep runs across Colab sessions on Google Drive, then set run_dir in the parameters below:",
        '#   from google.colab import drive; drive.mount("/content/drive")  # run_dir = "/content/drive/MyDrive/runs"',
        "import subprocess, sys  # noqa: E401",
        "from typing import Optional  # noqa: F401 - the parameters' annotations",
        f'STEERLIB = "{spec}"',
        'if "google.colab" in sys.modules:',
        *guard,
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", STEERLIB], check=True)',
    ])


def sync_install_cells(root: Path = ROOT) -> list[Path]:
    """Rewrite the install cell of every chapter source and published page from :func:`install_cell`
    (a page needs no re-execution: the cell does nothing outside Colab); returns the changed files."""
    import nbformat

    changed = []
    header = re.compile(r'^# %% tags=\[[^\]]*"' + INSTALL_TAG + r'"[^\]]*\]\n', re.M)
    for source in chapter_sources(root):
        text = source.read_text()
        m = header.search(text)
        if m is None:
            raise ChapterError(f"{source.name} has no cell tagged {INSTALL_TAG!r}")
        end = text.find("\n# %%", m.end())
        new = text[:m.end()] + install_cell(source.stem, root) + "\n" + text[end:]
        if new != text:
            source.write_text(new)
            changed.append(source)
        page = root / "book" / "chapters" / f"{source.stem}.ipynb"
        if page.exists():
            nb = nbformat.read(page, as_version=4)
            cells = [c for c in nb.cells if INSTALL_TAG in c.metadata.get("tags", [])]
            if cells and cells[0].source != install_cell(source.stem, root):
                cells[0].source = install_cell(source.stem, root)
                nbformat.write(nb, page)
                changed.append(page)
    return changed


def refresh_prose(source: Path, page: Path) -> bool:
    """Copy the markdown cells and every cell's tags from ``source`` into its published ``page``, whose
    code must be the source's (prose needs no re-execution; code does), and recompute its glued claims
    note from its results file (:func:`claims_note_of`). Returns whether it changed.

    Raises:
        ChapterError: the page's code differs from the source's (run the chapter again).
    """
    import nbformat

    src = read_source(source)
    nb = nbformat.read(page, as_version=4)
    cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    same = len(cells) == len(src.cells) and all(
        a.cell_type == b.cell_type and (a.cell_type == "markdown" or a.source.strip() == b.source.strip()
                                        or INSTALL_TAG in b.metadata.get("tags", []))
        for a, b in zip(cells, src.cells))
    if not same:
        raise ChapterError(f"{page.name}: its code differs from {source.name}; execute the chapter again")
    changed = False
    for cell, new in zip(cells, src.cells):
        tags = list(new.metadata.get("tags", []))
        if (cell.cell_type == "markdown" and cell.source != new.source) or cell.metadata.get("tags", []) != tags:
            if cell.cell_type == "markdown":
                cell.source = new.source
            cell.metadata["tags"] = tags
            changed = True
    note = claims_note_of(page.stem)
    for out in (o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])):
        if out.get("metadata", {}).get("scrapbook", {}).get("name") == "claims_note" and note is not None:
            record = {"application/papermill.record/text/markdown": note,  # what Chapter.claims glues
                      "application/papermill.record/text/plain": "<IPython.core.display.Markdown object>"}
            changed |= out["data"] != record
            out["data"] = record
    if changed:
        from steerlib.atomic import atomic_write

        atomic_write(page, lambda tmp: nbformat.write(nb, tmp))
    return changed


def claims_note_of(name: str) -> str | None:
    """The claims note chapter ``name`` glues (:meth:`steerlib.chapter.Chapter.claims`), computed from its
    published results file with the current verdict rules; ``None`` without a results file. The note is
    a function of the results alone, so ``prose`` refreshes it in a page without re-executing it."""
    from steerlib.claims import chapter_findings

    if name not in CHAPTERS or not CHAPTERS[name].results.exists():
        return None
    return chapter_findings(name, json.loads(CHAPTERS[name].results.read_text()))


def chapter_parameters(source: Path) -> dict[str, dict[str, Any]]:
    """Parameters declared in the chapter's ``parameters`` cell (name -> papermill's description)."""
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (source.stem + ".ipynb")
        nbformat.write(read_source(source), path)
        return papermill.inspect_notebook(str(path))


def check_parameters(source: Path, parameters: dict[str, Any]) -> None:
    """Fail with one line naming any parameter the chapter does not declare, or whose value does not
    have the declared type (``int``, ``float``, ``str``, ``bool``, ``Optional[...]``)."""
    known = chapter_parameters(source)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ChapterError(
            f"{source.stem}: unknown parameter(s) {', '.join(unknown)}; "
            f"this chapter takes: {', '.join(sorted(known)) or '(none)'}"
        )
    for name, value in parameters.items():
        expected = known[name].get("inferred_type_name") or ""
        if not value_has_type(value, expected):
            raise ChapterError(f"{source.stem}: parameter {name} = {value!r} is a {type(value).__name__}, "
                               f"expected {expected}")


def _clean(nb: Any, chapter: str = "") -> Any:
    """Strip per-cell timing metadata and stderr output (progress bars, library warnings), write the
    install cell from ``_config.yml``, and set the Colab metadata of a published page (an A100, except
    for the chapters that run on the CPU whatever the preset)."""
    for cell in nb.cells:
        for key in _TIMING_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]  # stream outputs only have names
            if INSTALL_TAG in cell.metadata.get("tags", []) and chapter:
                cell.source = install_cell(chapter)
    colab = nb.metadata.setdefault("colab", {})
    colab["provenance"] = []
    if chapter in CHAPTERS and CHAPTERS[chapter].cpu_only:
        nb.metadata.pop("accelerator", None)
        colab.pop("gpuType", None)
    else:
        nb.metadata["accelerator"] = "GPU"
        colab["gpuType"] = "A100"
    return nb


def execute_chapter(
    source: str | Path,
    output: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    log_output: bool = False,
    progress: bool = False,
) -> Path:
    """Execute one chapter source into ``output``; on any error ``output`` is left untouched.

    Args:
        source: ``notebooks/NN_name.py``.
        output: the executed notebook to write.
        parameters: values for the chapter's parameters cell (names are checked first).
        cwd: working directory of the kernel (default: the repository root).
        log_output: stream cell output to the log.
        progress: show papermill's cell progress bar (on stderr).

    Raises:
        ChapterError: unknown parameter names, or a failing cell (named in the message).
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from steerlib.chapter import PAGE_ENV

    source, output = Path(source), Path(output)
    parameters = dict(parameters or {})
    check_parameters(source, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    page = output.resolve().parent == PAGES.resolve()
    was = os.environ.get(PAGE_ENV)
    os.environ[PAGE_ENV] = "1" if page else "0"  # the kernel inherits it: a page glues, an OUT notebook shows
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / output.name
        try:
            papermill.execute_notebook(
                read_source(source),
                str(scratch),
                parameters=parameters,
                kernel_name="python3",
                language="python",
                cwd=str(cwd or ROOT),
                log_output=log_output,
                progress_bar=progress,
            )
        except PapermillExecutionError as err:
            raise ChapterError(f"{source.stem}: cell {err.exec_count} failed: {err.ename}: {err.evalue}") from err
        finally:
            if was is None:
                os.environ.pop(PAGE_ENV, None)
            else:
                os.environ[PAGE_ENV] = was
        nb = _clean(nbformat.read(scratch, as_version=4), source.stem)
        nbformat.write(nb, scratch)
        shutil.move(str(scratch), output)
    return output


def cost_page(root: Path = ROOT) -> str:
    """``book/costs.md``: what each chapter took in this book's build (``book/build_times.json``, with
    the preset each page ran, from its results file) and the plan's hours and peak memory for every
    chapter on one A100 40 GB and 80 GB with the paper's presets (:func:`steerlib.plan.table`)."""
    from steerlib.plan import build_table, table

    times = json.loads((root / "book" / "build_times.json").read_text())
    presets = {}
    for name in CHAPTERS:
        path = root / "book" / "results" / f"{name}.json"
        if path.exists():
            presets[name] = json.loads(path.read_text()).get("preset", "organism")
    return (f"**This book's build** (measured, `book/build_times.json`):\n\n{build_table(times, presets)}\n\n"
            f"**One GPU, the paper's presets** (planned, `python -m steerlib.plan --table`):\n\n{table()}\n")


def write_generated(root: Path = ROOT) -> list[Path]:
    """The pages generated from code and results: ``book/claims.md`` (and ``book/results/claims.json``)
    from the chapters' results, ``book/costs.md`` from the cost plan. Committed, so the HTML builds
    without steerlib (the Pages workflow); a test checks they are current."""
    from steerlib.atomic import atomic_write_text
    from steerlib.claims import write_claims
    write_claims(root / "book" / "results", root / "book" / "claims.md")
    atomic_write_text(root / "book" / "costs.md", cost_page(root))
    return [root / "book" / "claims.md", root / "book" / "results" / "claims.json", root / "book" / "costs.md"]


#: What a page loading MathJax from the network contains (any CDN: the book serves its own copy).
_CDN_MATHJAX = re.compile(r"""src=["'](?:https?:)?//[^"']*mathjax""", re.IGNORECASE)


def network_mathjax(html_dir: Path) -> list[str]:
    """The built pages (relative paths) that load MathJax from the network instead of the book's own
    ``_static/mathjax`` (the ``sphinx-mathjax-offline`` extension in ``_config.yml``).

    Example:
        >>> network_mathjax(Path("_build/html"))                                   # doctest: +SKIP
        []
    """
    return sorted(str(p.relative_to(html_dir)) for p in html_dir.rglob("*.html")
                  if _CDN_MATHJAX.search(p.read_text(errors="replace")))


def build_html(root: Path = ROOT) -> None:
    """Write the generated pages, then ``jupyter-book build . -n -W --keep-going`` (warnings are errors);
    refuse pages that load MathJax from a CDN (formulas must render offline)."""
    write_generated(root)
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(root), "-n", "-W", "--keep-going"]
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if exe:
        cmd = [exe, "build", str(root), "-n", "-W", "--keep-going"]
    subprocess.run(cmd, check=True, cwd=root)
    online = network_mathjax(root / "_build" / "html")
    if online:
        raise ChapterError(f"{len(online)} page(s) load MathJax from the network (first: {online[0]}); "
                           "install the book extra (sphinx-mathjax-offline) and rebuild")


def default_jobs() -> int:
    """Chapters run side by side by ``build``: 2 where there are at least 2 cores, else 1."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def build_tasks(root: Path = ROOT, threads: int = 1, skip: Sequence[str] = ()) -> list[Any]:
    """The book's build graph: pretraining each organism the chapters need, each chapter's training runs
    built as tasks of their own (:mod:`steerlib.prebuild`), then every chapter (``python -m steerlib.book
    chapter NAME`` in a subprocess) after what it needs (:attr:`steerlib.chapters.ChapterSpec.needs`);
    the chapters in ``skip`` and what only they need are left out."""
    from steerlib.buildgraph import Task
    from steerlib.organism import ORGANISMS

    names = [s.stem for s in chapter_sources(root) if s.stem not in skip]
    needs = {n: CHAPTERS[n].needs for n in names}
    run_tasks = [t for n in names for t in CHAPTERS[n].run_tasks]
    organisms = sorted({x.removeprefix("organism-") for v in needs.values() for x in v if x.startswith("organism-")})
    parents = [ORGANISMS[o].parent for o in organisms if ORGANISMS[o].parent]
    organisms = sorted(set(organisms) | set(parents))
    # An organism pretrains with its own thread count (its weights depend on it), so it takes that many slots: a
    # pretraining inside a chapter would run 2 threads beside another task's and crawl (measured: 40x slower).
    tasks = [Task(f"organism-{o}", needs=(f"organism-{ORGANISMS[o].parent}",) if ORGANISMS[o].parent else (),
                  slots=-(-ORGANISMS[o].threads // threads), command=(sys.executable, "-m", "steerlib.organism", o))
             for o in organisms]
    tasks += [Task(name, needs=("organism-main",), command=(sys.executable, "-m", "steerlib.prebuild", name))
              for name in run_tasks]
    for n in names:  # a chapter with threads of its own sets them and takes as many slots
        own = CHAPTERS[n].threads
        env = ("env", f"OMP_NUM_THREADS={own}", f"MKL_NUM_THREADS={own}") if own else ()
        first = tuple(x for x in needs[n] if x in names or x in run_tasks or x.startswith("organism-"))
        tasks.append(Task(n, needs=first, slots=-(-own // threads) if own else 1,
                          command=(*env, sys.executable, "-m", "steerlib.book", "chapter", n)))
    return tasks


def build_all(root: Path = ROOT, jobs: int | None = None, skip: Sequence[str] = ()) -> None:
    """Pretrain the organisms and execute every chapter with its defaults, ``jobs`` at a time (each with
    cores / jobs threads; :mod:`steerlib.buildgraph`), then the HTML. Progress: one line per task started
    or finished, with the planned minutes from the previous build's ``book/build_times.json``; each
    task's output in ``runs/build-logs/<task>.log``. ``skip``: chapters kept as published (their pages
    must be current); the whole build's time (``book``) is then not recorded."""
    from steerlib.atomic import write_json
    from steerlib.buildgraph import BuildError, run_graph

    jobs = jobs or default_jobs()
    if jobs < 1:
        raise ChapterError(f"jobs must be at least 1, not {jobs}")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    unknown = [n for n in skip if n not in CHAPTERS]
    if unknown:
        raise ChapterError(f"no chapter {unknown[0]!r} to skip; chapters: {', '.join(CHAPTERS)}")
    sync_install_cells(root)
    planned = json.loads(BUILD_TIMES.read_text()) if BUILD_TIMES.exists() else {}
    times: dict[str, float] = dict(planned)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    tasks = build_tasks(root, threads, skip)
    print(f"building {len(tasks)} tasks, {jobs} at a time, {threads} thread(s) each", flush=True)
    start = time.monotonic()

    def save(name: str, minutes: float) -> None:
        times[name] = minutes
        write_json(BUILD_TIMES, times)

    try:
        run_graph(tasks, jobs=jobs, minutes=planned, log_dir=root / "runs" / "build-logs", env=env, on_done=save,
                  cwd=root)
    except BuildError as err:
        raise ChapterError(str(err)) from err
    minutes = round((time.monotonic() - start) / 60, 2)
    if not skip:
        times["book"] = minutes
        write_json(BUILD_TIMES, times)
    print(f"all {len(tasks)} tasks in {minutes:.1f} min" + (f" (kept as published: {', '.join(skip)})" if skip else ""),
          flush=True)
    build_html(root)


def _parse_params(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    from papermill.cli import _resolve_type

    return {name: _resolve_type(value) for name, value in pairs}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m steerlib.book", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    bd = sub.add_parser("build", help="execute every chapter with its defaults, then build the HTML")
    bd.add_argument("--jobs", type=int, default=None, help="tasks side by side (default: 2 with 2+ cores, else 1)")
    bd.add_argument("--skip", action="append", default=[], metavar="CHAPTER",
                    help="keep this chapter as published (repeatable)")
    sub.add_parser("html", help="build the HTML from the committed chapters")
    sub.add_parser("prose", help="copy edited prose and cell tags from the sources into the published pages")
    sub.add_parser("sync", help="write _config.yml's repository URL into every chapter's install cell")
    ch = sub.add_parser("chapter", help="execute one chapter")
    ch.add_argument("name", help=f"chapter name: {', '.join(CHAPTERS)}")
    ch.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ch.add_argument("--out", default=None, help="output notebook (default: the published page)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "chapter":
            source = NOTEBOOKS / f"{args.name}.py"
            if not source.exists():
                names = ", ".join(p.stem for p in chapter_sources()) or "(none yet)"
                raise ChapterError(f"no chapter {args.name!r}; chapters: {names}")
            params = _parse_params(args.parameter)
            out = Path(args.out) if args.out else PAGES / f"{args.name}.ipynb"
            if params and not args.out:
                raise ChapterError("a run with parameters must not overwrite the published page: pass OUT=path.ipynb")
            if args.out and "results_path" not in params:  # results beside the notebook, never book/results/
                params["results_path"] = str(out.with_suffix(".json").resolve())
            import logging  # papermill logs each cell's output (the plan, progress, headline numbers) at INFO

            logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)  # stderr: errors only
            logging.getLogger("papermill").setLevel(logging.INFO)
            print(f"executed {execute_chapter(source, out, params, log_output=True)}")
            if args.out:
                print(f"results in {params['results_path']}")
        elif args.cmd == "prose":
            for source in chapter_sources():
                if refresh_prose(source, PAGES / f"{source.stem}.ipynb"):
                    print(f"updated the prose of {source.stem}.ipynb")
        elif args.cmd == "sync":
            for path in sync_install_cells():
                print(f"updated the install cell of {path.name}")
        elif args.cmd == "build":
            build_all(jobs=args.jobs, skip=args.skip)
        else:
            build_html()
    except ChapterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"error: jupyter-book failed with exit code {err.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
