"""The book pipeline: execute chapter sources with papermill, publish them, build the HTML.

Chapter sources are jupytext ``py:percent`` files ``notebooks/NN_name.py``; their executed copies are
``book/chapters/NN_name.ipynb``. A chapter is executed from its source with papermill (parameter names
checked against its ``parameters`` cell first: papermill alone only warns on unknown names), and only
a run that finished without error is published: a failing run names the failing cell and leaves the
published page untouched.

Command line (what ``make book`` and ``make chapter`` call)::

    python -m steerlib.book build                       # every chapter, then the HTML
    python -m steerlib.book chapter 02_layer_curve -p preset qwen2.5-math-1.5b --out run.ipynb
    python -m steerlib.book html                        # HTML from the committed chapters only

Example:
    >>> execute_chapter("notebooks/01_training.py", "out.ipynb", {"steps": 2})  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ChapterError",
    "chapter_sources",
    "chapter_parameters",
    "check_parameters",
    "value_has_type",
    "execute_chapter",
    "build_html",
    "main",
]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = ROOT / "book" / "chapters"
_TIMING_KEYS = ("execution", "papermill", "ExecuteTime")


class ChapterError(RuntimeError):
    """A chapter could not be executed (bad parameters or a failing cell)."""


def chapter_sources(root: Path = ROOT) -> list[Path]:
    """The chapter sources ``notebooks/NN_name.py`` in order."""
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.py"))


def _read(source: Path) -> Any:
    import jupytext

    nb = jupytext.read(source)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def chapter_parameters(source: Path) -> dict[str, dict[str, Any]]:
    """Parameters declared in the chapter's ``parameters`` cell (name -> papermill's description)."""
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (source.stem + ".ipynb")
        nbformat.write(_read(source), path)
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


def value_has_type(value: Any, declared: str) -> bool:
    """Whether ``value`` fits a parameter declared as ``declared`` (``int``, ``Optional[float]``, ...);
    unknown declarations accept anything.

    Example:
        >>> value_has_type(3, "Optional[float]"), value_has_type("x", "int"), value_has_type(True, "int")
        (True, False, False)
    """
    text = declared.replace(" ", "")
    if text.startswith("Optional[") and text.endswith("]"):
        if value is None:
            return True
        text = text[len("Optional["):-1]
    checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str)}
    return checks[text](value) if text in checks else True


def _clean(nb: Any) -> Any:
    """Strip per-cell timing metadata and stderr output (progress bars, library warnings), and set the
    Colab metadata of a published page."""
    for cell in nb.cells:
        for key in _TIMING_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]  # stream outputs only have names
    nb.metadata["accelerator"] = "GPU"
    nb.metadata.setdefault("colab", {})["gpuType"] = "A100"
    nb.metadata.setdefault("colab", {})["provenance"] = []
    return nb


def execute_chapter(
    source: str | Path,
    output: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    log_output: bool = False,
) -> Path:
    """Execute one chapter source into ``output``; on any error ``output`` is left untouched.

    Args:
        source: ``notebooks/NN_name.py``.
        output: the executed notebook to write.
        parameters: values for the chapter's parameters cell (names are checked first).
        cwd: working directory of the kernel (default: the repository root).
        log_output: stream cell output to the log.

    Raises:
        ChapterError: unknown parameter names, or a failing cell (named in the message).
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, output = Path(source), Path(output)
    parameters = dict(parameters or {})
    check_parameters(source, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / output.name
        try:
            papermill.execute_notebook(
                _read(source),
                str(scratch),
                parameters=parameters,
                kernel_name="python3",
                language="python",
                cwd=str(cwd or ROOT),
                log_output=log_output,
                progress_bar=sys.stderr.isatty(),
            )
        except PapermillExecutionError as err:
            raise ChapterError(f"{source.stem}: cell {err.exec_count} failed: {err.ename}: {err.evalue}") from err
        nb = _clean(nbformat.read(scratch, as_version=4))
        nbformat.write(nb, scratch)
        shutil.move(str(scratch), output)
    return output


def build_html(root: Path = ROOT) -> None:
    """``jupyter-book build . -n -W --keep-going`` (warnings are errors)."""
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(root), "-n", "-W", "--keep-going"]
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if exe:
        cmd = [exe, "build", str(root), "-n", "-W", "--keep-going"]
    subprocess.run(cmd, check=True, cwd=root)


def _parse_params(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    from papermill.cli import _resolve_type

    return {name: _resolve_type(value) for name, value in pairs}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m steerlib.book", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="execute every chapter with its defaults, then build the HTML")
    sub.add_parser("html", help="build the HTML from the committed chapters")
    ch = sub.add_parser("chapter", help="execute one chapter")
    ch.add_argument("name", help="chapter name, e.g. 02_layer_curve")
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
            out = Path(args.out) if args.out else CHAPTERS / f"{args.name}.ipynb"
            if params and not args.out:
                raise ChapterError("a run with parameters must not overwrite the published page: pass OUT=path.ipynb")
            print(f"executed {execute_chapter(source, out, params, log_output=True)}")
        elif args.cmd == "build":
            for source in chapter_sources():
                print(f"executing {source.stem} ...", flush=True)
                execute_chapter(source, CHAPTERS / f"{source.stem}.ipynb")
            build_html()
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
