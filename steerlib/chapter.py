"""The chapter scaffold: one call sets a chapter up, one call publishes it.

Every chapter starts from the same things (the preset with the chapter's overrides, the model and
tokenizer, the run directory, the layer sweep's vectors, the prompts of a split) and ends the same way
(its headline numbers written atomically to ``book/results/NN_name.json`` with NaN as ``null``, and
glued into the page's prose). :func:`setup` reads the chapter's parameters from its namespace (the
names papermill injects), checks them, loads what is needed and prints one line saying what runs
where; :meth:`Chapter.publish` does the rest.

Example:
    >>> ch = setup("01_training", {"preset": "organism", "run_dir": "runs/x"}, load=False)
    >>> ch.P.name, ch.run.name
    ('organism', 'x')
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steerlib.loaded import LoadedModel
from steerlib.atomic import json_clean, write_json
from steerlib.chapters import PRESET_PARAMETERS
from steerlib.plan import resolve_preset_for
from steerlib.presets import Preset, load_model
from steerlib.runs import RunLayout

__all__ = ["Chapter", "setup", "value_has_type", "PRESET_PARAMETERS", "RUN_DEFINING", "run_dir_for", "parse_names",
           "PAGE_ENV"]




#: Chapter parameters that change what a run trains: a chapter's default run directory depends on them.
RUN_DEFINING = ("model", "seed", "steps", "prompts_per_step", "completions_per_prompt", "max_new_tokens", "lr",
                "adaptive_lr")


def run_dir_for(preset: Preset, params: Mapping[str, Any]) -> Path:
    """The default run directory: ``runs/<preset>``, plus the parameters that define its runs when
    they differ from the preset's (a rerun with other parameters trains into its own directory; a rerun
    with the same parameters finds its finished runs).

    Example:
        >>> run_dir_for(resolve_preset_for({"preset": "organism"}), {"seed": 1, "steps": 30, "lr": None}).as_posix()
        'runs/organism-seed=1,steps=30'
    """
    from steerlib.presets import PRESETS

    base = PRESETS[preset.name]
    parts = []
    for key in RUN_DEFINING:
        value = params.get(key)
        if value is None or (key == "seed" and value == base.seed) or (key == "model" and value == base.model):
            continue
        parts.append(f"{key}={str(value).replace('/', '_')}")
    return Path("runs") / (preset.name + ("-" + ",".join(parts) if parts else ""))


#: ``"1"`` in the environment of a kernel that executes a book page (:func:`steerlib.book.execute_chapter`):
#: figures are then only glued into the page's prose. Anywhere else (an ``OUT=`` notebook, Colab, a
#: terminal run) they are also shown as ordinary outputs and the chapter prints its headline numbers, so
#: the notebook reads on its own, outside the book.
PAGE_ENV = "STEERLIB_PAGE"


def _on_page() -> bool:
    return os.environ.get(PAGE_ENV) == "1"


def _glue(name: str, value: Any) -> bool:
    """Glue ``value`` into the page; False outside the book tooling (e.g. on Colab)."""
    try:
        from myst_nb import glue
    except ImportError:  # outside the book tooling: nothing to glue into
        return False
    glue(name, value, display=False)
    return True


def _hidpi() -> None:
    """Draw inline figures at twice their pixel size (sharp on high-DPI screens, same layout)."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


@dataclass
class Chapter:
    """What a chapter works with (see :func:`setup`)."""

    name: str
    P: Preset
    run: Path
    results_path: Path
    val_problems: int = 200
    org: LoadedModel | None = None
    select_on: str = "validation"  # or "test": the authors' protocol (best checkpoint by the test Average)
    plan: Any = None  # the cost plan printed at setup (a steerlib.plan.Plan; None when max_hours was not asked)
    started: float = field(default_factory=time.monotonic)  # when setup began: publish measures against the plan

    @property
    def model(self) -> Any:
        return self.org.model

    @property
    def tok(self) -> Any:
        return self.org.tokenizer

    @property
    def layout(self) -> RunLayout:
        """The run folders under this chapter's run directory."""
        return RunLayout(self.run)

    @functools.cached_property
    def sweep(self) -> Any:
        """Chapter 02's layer sweep in this run directory (trained or resumed if missing)."""
        from steerlib.selection import layer_vectors

        return layer_vectors(self.org, self.P, self.layout, val_problems=self.val_problems, select_on=self.select_on)

    @property
    def vectors(self) -> dict[int, Any]:
        """The sweep's best vector per layer."""
        return self.sweep.vectors

    def seed_vectors(self, seeds: Sequence[int]) -> dict[int, dict[int, Any]]:
        """Chapter 02's sweep of each training seed in ``seeds`` (read back; trained if missing): seed ->
        layer -> best vector. The preset's own seed is :attr:`vectors`."""
        from steerlib.seeds import seeded_sweeps

        sweeps = seeded_sweeps(self.org, self.P, self.layout, seeds, val_problems=self.val_problems,
                               select_on=self.select_on)
        return {s: sweep.vectors for s, sweep in sweeps.items()}

    def prompts(self, split: str = "test", n: int | None = None, append: str = "") -> tuple[list[str], list[str]]:
        """``(prompts, answers)`` of a split (``n`` defaults to the preset's ``eval_problems``)."""
        from steerlib.data import split_prompts

        return split_prompts(self.P, self.tok, split, n or self.P.eval_problems, append)

    def evaluate(self, configs: Mapping[str, Sequence[Any]], **kwargs: Any) -> dict[str, Any]:
        """Steering configurations on the test split (one routed batch), see :func:`evaluate_configs`."""
        from steerlib.preset_eval import evaluate_configs

        return evaluate_configs(self.org, self.P, dict(configs), **kwargs)

    def evaluate_patch(self, vector: Any, layer: int, specs: Mapping[str, Mapping[str, Any]],
                       **kwargs: Any) -> dict[str, Any]:
        """Head patches of ``vector`` into ``layer``'s attention on the test split, see :func:`evaluate_patched`."""
        from steerlib.preset_eval import evaluate_patched

        return evaluate_patched(self.org, self.P, vector, layer, {k: dict(v) for k, v in specs.items()}, **kwargs)

    def figure(self, name: str, fig: Any) -> None:
        """Glue ``fig`` (a matplotlib figure or anything with an HTML view) under ``name``; the page shows
        it, numbered and captioned, where its markdown says ``{glue:figure} name``. Outside the book
        tooling (Colab), or in a notebook that is not a book page, it is displayed here as well."""
        if not _glue(name, fig) or not _on_page():
            from IPython.display import display

            display(fig)

    @property
    def model_label(self) -> str:
        """What the pages call the model this chapter ran on: ``organism`` or the model's own name."""
        return "organism" if self.P.train_source == "organism" else str(self.P.model).rstrip("/").split("/")[-1]

    def table(self, table: Any, digits: int = 3) -> Any:
        """``table`` as a reader sees it (:func:`steerlib.tables.tidy`)."""
        from steerlib.tables import tidy

        return tidy(table, digits)

    def claims(self, results: dict[str, Any]) -> str:
        """Glue ``claims_note`` (Markdown: the page's result box shows it with ``{glue:md}``): the verdicts
        (:func:`steerlib.claims.verdict`) of the paper's claims this chapter measures, read from its
        published ``results``."""
        from IPython.display import Markdown

        from steerlib.claims import chapter_findings, plain_verdicts

        text = chapter_findings(self.name, results)
        _glue("claims_note", Markdown(text))
        if not _on_page():  # a terminal or an OUT notebook: the badges as plain words
            print("What this chapter found:\n" + plain_verdicts(text))
        return text

    def publish(self, results: dict[str, Any], **glue: Any) -> dict[str, Any]:
        """Write ``results`` (plus the preset's name and, when a plan was printed, ``cost``: the planned
        hours per part beside the hours measured from setup to here, which are less when runs were found
        in the run folder) to the chapter's results file and glue every scalar entry and every ``glue``
        keyword into the page, and ``this_run`` (the results column's heading, naming the model).
        Returns the JSON as written."""
        cost = {}
        if self.plan is not None:
            measured = (time.monotonic() - self.started) / 3600
            cost = {"cost": {"device": self.plan.device, "dtype": self.plan.dtype,
                             "planned_hours": self.plan.hours, "measured_hours": measured,
                             "measured_over_planned": measured / self.plan.hours if self.plan.hours else None,
                             "planned_parts_hours": {k: v / 3600 for k, v in self.plan.seconds.items()}}}
        results = json_clean({"preset": self.P.name, **results, **cost})
        write_json(self.results_path, results)
        glue = {"this_run": f"this run ({self.model_label})", **glue}
        for key, value in {**results, **glue}.items():
            if isinstance(value, np.generic):  # a numpy scalar (e.g. from pandas) glues as a Python number
                value = value.item()
            if value is None or isinstance(value, (int, float, str)):
                _glue(key, float("nan") if value is None else value)
        if not _on_page():  # outside the book the prose's {glue:text} roles stay unrendered: print their values
            print(f"Results written to {self.results_path}; the numbers the page's text quotes:")
            for key, value in glue.items():
                shown = f"{value:.4g}" if isinstance(value, float) else value
                print(f"  {key} = {shown}")
        return results


def setup(name: str, params: Mapping[str, Any], *, load: bool = True, positive: Sequence[str] = (),
          choices: Mapping[str, Sequence[str]] | None = None) -> Chapter:
    """Set up chapter ``name`` from its parameters (a chapter passes ``globals()``).

    Reads ``preset``, ``run_dir`` (default :func:`run_dir_for`), ``results_path``, ``val_problems``,
    ``select_on`` and the preset overrides in :data:`PRESET_PARAMETERS`; checks that every name in
    ``positive`` is at least 1 and every name in ``choices`` one of its values; prints the cost plan and
    refuses to start when it exceeds ``max_hours`` or the device's memory (:func:`steerlib.plan.check_budget`,
    the same plan ``python -m steerlib.plan`` prints for these parameters); loads the model
    unless ``load`` is false. Raises ``ValueError`` with one line on a bad parameter, before any work.
    """
    declared = params.get("__annotations__", {})  # the parameters cell's annotations (papermill keeps them)
    for key, annotation in declared.items():
        text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        text = text.replace("typing.", "")
        if key in params and not value_has_type(params[key], text):
            raise ValueError(f"parameter {key} = {params[key]!r} is a {type(params[key]).__name__}, expected {text}")
    for key in positive:
        if not isinstance(params[key], int) or params[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, not {params[key]!r}")
    for key, allowed in (choices or {}).items():
        if params[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(map(str, allowed))}, not {params[key]!r}")
    preset = resolve_preset_for(params)
    ch = Chapter(
        name,
        preset,
        Path(str(params.get("run_dir") or run_dir_for(preset, params))),
        Path(str(params.get("results_path", f"book/results/{name}.json"))),
        int(params.get("val_problems", 200)),
        select_on=str(params.get("select_on", "validation")),
    )
    if ch.select_on not in ("validation", "test"):
        raise ValueError(f"select_on must be validation or test, not {ch.select_on!r}")
    if "max_hours" in params:  # the cost plan first: a long run starts only when the user agreed to it
        from steerlib.plan import chapter_plan, check_budget

        plan = chapter_plan(name, params, preset=preset)
        check_budget(plan, float(params["max_hours"]))
        ch.plan = plan
    _hidpi()
    if load:
        ch.org = load_model(preset)
        print(
            f"{name}: preset {preset.name} (model {preset.model}, {preset.n_layers} layers), "
            f"{preset.steps} RLOO steps of {preset.prompts_per_step} x {preset.completions_per_prompt}; "
            f"runs in {ch.run}/"
        )
    return ch


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


def parse_names(text: str, what: str = "names") -> list[str]:
    """Comma-separated names from a chapter parameter; at least one.

    Example:
        >>> parse_names("tuned, sibling,", "targets")
        ['tuned', 'sibling']
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"{what} must name at least one model, not {text!r}")
    return names
