"""Chapter 02's training runs as build tasks of their own, so the book build can run them side by side.

Chapter 02 trains a layer sweep per training seed and three comparison runs (all-layer steering, LoRA,
a full fine-tune) before it evaluates anything; chapters 03-08 need only seed 0's sweep (03 also the
all-layer run, 07 the full fine-tune). Run inside the chapter, that is one 26-minute task that every
later chapter waits for. Here each run is a task of its own (``python -m steerlib.prebuild NAME``,
placed in the graph by :func:`steerlib.book.build_tasks`): it sets chapter 02 up exactly as its page
does with its default parameters (the chapter's own ``parameters`` cell, executed), trains (or reads
back) that one run in the chapter's run directory, and the chapter later finds it finished.

A run trained here is the run the chapter would train: the same preset, seed, directory and
snapshot choice, and the same thread count under the build (results are bit-identical run to run at
a fixed thread count).

Which runs are tasks is the registry's word (:attr:`steerlib.chapters.ChapterSpec.run_tasks`).

Example:
    >>> sorted(RUN_TASKS)
    ['run-all-layer', 'run-full-ft', 'run-lora', 'run-sweep-seed0', 'run-sweep-seed1', 'run-sweep-seed2']
    >>> chapter_defaults(CHAPTER)["sweep_mode"]
    'auto'
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlib.chapters import CHAPTERS, SWEEP_SEEDS, default_parameters

__all__ = ["CHAPTER", "RUN_TASKS", "SWEEP_SEEDS", "chapter_defaults", "train_part", "main"]

#: The chapter whose runs these are (the one whose registry entry has run tasks).
CHAPTER = next(spec.name for spec in CHAPTERS.values() if spec.run_tasks)
#: Build task name -> the comparison run's name in :func:`steerlib.selection.baselines`, or a sweep seed.
RUN_TASKS = dict(CHAPTERS[CHAPTER].run_tasks)


def chapter_defaults(name: str = CHAPTER) -> dict[str, Any]:
    """The chapter's parameters as its page runs them by default (:func:`steerlib.chapters.default_parameters`)."""
    return default_parameters(name)


def train_part(name: str) -> Path:
    """Train (or read back) build task ``name``'s run as chapter 02 would; returns its directory."""
    from steerlib.chapter import setup
    from steerlib.seeds import seeded_sweeps
    from steerlib.selection import baselines

    if name not in RUN_TASKS:
        raise ValueError(f"no run task {name!r}; run tasks: {', '.join(sorted(RUN_TASKS))}")
    params = chapter_defaults()
    ch = setup(CHAPTER, params)
    kw: dict[str, Any] = dict(val_problems=ch.val_problems, select_on=ch.select_on)
    part = RUN_TASKS[name]
    if isinstance(part, int):
        sweeps = seeded_sweeps(ch.org, ch.P, ch.layout, [part], mode=params["sweep_mode"],
                               layers=ch.P.parse_layers(params["layers"]), **kw)
        return sweeps[part].runs[0].run_dir
    return baselines(ch.org, ch.P, ch.layout, names=(part,), **kw)[part].train.run_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m steerlib.prebuild NAME``: one of :data:`RUN_TASKS`."""
    ap = argparse.ArgumentParser(prog="python -m steerlib.prebuild", description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=sorted(RUN_TASKS))
    args = ap.parse_args(argv)
    print(f"{args.name}: finished in {train_part(args.name)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
