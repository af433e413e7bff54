"""Run a graph of build tasks on a few cores: independent tasks side by side, longest path first.

The book's chapters are small-model work that does not fill two cores: measured on this 2-core machine,
a chapter with 1 thread beside another takes 1.4-1.75x its time alone with 2 threads (01 1.4x, 07 1.5x,
02 1.7x, 09 1.7x), so two side by side get 1.15-1.45x the work done. :func:`run_graph` starts every
task whose prerequisites are done, as long as free *slots* (jobs) remain: multi-slot tasks first, then
the task with the longest planned path to the end of the build, each as a subprocess; a ready task
that does not fit yet holds back the tasks after it, so freed slots wait for it instead of starving
it. A task that sets its own thread count (an organism pretrained with 2 threads, because its weights
depend on it) takes that many slots. If a task fails, nothing new starts, the running tasks finish,
and :class:`BuildError` names the task and its log.

Example:
    >>> tasks = [Task("a"), Task("b", needs=("a",)), Task("c")]
    >>> critical_paths(tasks, {"a": 1.0, "b": 5.0, "c": 2.0})
    {'a': 6.0, 'b': 5.0, 'c': 2.0}
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Task", "BuildError", "critical_paths", "run_graph"]


@dataclass(frozen=True)
class Task:
    """One build step: a command, the tasks it needs first, and the slots (jobs) it occupies."""

    name: str
    needs: tuple[str, ...] = ()
    slots: int = 1
    command: tuple[str, ...] = field(default=(), compare=False)


class BuildError(RuntimeError):
    """A task failed (its name and log are in the message) or the graph cannot run."""


def _check(tasks: Sequence[Task]) -> dict[str, Task]:
    by_name = {t.name: t for t in tasks}
    if len(by_name) != len(tasks):
        raise BuildError("two tasks share a name")
    for t in tasks:
        missing = [n for n in t.needs if n not in by_name]
        if missing:
            raise BuildError(f"task {t.name!r} needs unknown task(s) {', '.join(missing)}")
    return by_name


def critical_paths(tasks: Sequence[Task], minutes: dict[str, float], default: float = 1.0) -> dict[str, float]:
    """For each task, the planned minutes from its start to the end of the longest chain that waits on it."""
    by_name = _check(tasks)
    users: dict[str, list[str]] = {n: [] for n in by_name}
    for t in tasks:
        for n in t.needs:
            users[n].append(t.name)
    memo: dict[str, float] = {}

    def path(name: str, seen: tuple[str, ...] = ()) -> float:
        if name in seen:
            raise BuildError(f"the tasks form a cycle through {name!r}")
        if name not in memo:
            memo[name] = minutes.get(name, default) + max((path(u, seen + (name,)) for u in users[name]), default=0.0)
        return memo[name]

    return {n: path(n) for n in by_name}


def run_graph(
    tasks: Sequence[Task],
    *,
    jobs: int,
    minutes: dict[str, float] | None = None,
    log_dir: str | Path,
    env: dict[str, str] | None = None,
    on_done: Callable[[str, float], None] | None = None,
    cwd: str | Path | None = None,
    poll_s: float = 1.0,
) -> dict[str, float]:
    """Run ``tasks`` (each ``command`` a subprocess, output in ``log_dir/<name>.log``) with ``jobs`` slots.

    Args:
        jobs: slots in all; a task with ``slots`` > ``jobs`` runs alone.
        minutes: planned minutes per task (the previous build's), for the order; 1 for unknown tasks.
        env: the subprocesses' environment (default: this process's).
        on_done: called with (name, minutes) as each task finishes (to save timings as they come).
        cwd: the subprocesses' working directory (default: this process's).

    Returns:
        Wall minutes per task.

    Raises:
        BuildError: a task exited non-zero (after the running ones finished).
    """
    by_name = _check(tasks)
    priority = critical_paths(tasks, minutes or {})
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Tasks that need several slots first, then the longest planned path to the end of the build; a ready
    # task that does not fit holds back the ones after it (else 1-slot tasks would take every freed slot).
    pending = sorted(by_name, key=lambda n: (-min(by_name[n].slots, jobs), -priority[n]))
    env = dict(env if env is not None else os.environ)
    running: dict[str, tuple[subprocess.Popen, float, int]] = {}  # name -> (process, start, slots)
    done: dict[str, float] = {}
    failed: list[str] = []
    start = time.monotonic()
    try:
        while pending or running:
            free = jobs - sum(s for _, _, s in running.values())
            for name in [] if failed else [n for n in pending if all(x in done for x in by_name[n].needs)]:
                need = min(by_name[name].slots, jobs)
                if need > free:  # the first ready task that does not fit keeps the slots it waits for
                    break
                with open(log_dir / f"{name}.log", "w") as log:
                    proc = subprocess.Popen(list(by_name[name].command), stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=cwd)
                running[name] = (proc, time.monotonic(), need)
                pending.remove(name)
                free -= need
                print(f"[{len(done) + len(running)}/{len(by_name)}] {name}: started at {time.strftime('%H:%M')} "
                      f"(planned {(minutes or {}).get(name, float('nan')):.1f} min; running: {', '.join(running)}; "
                      f"build so far {(time.monotonic() - start) / 60:.1f} min)", flush=True)
            if not running:
                if failed:
                    break
                raise BuildError(f"nothing can start: {', '.join(pending)} wait on tasks that did not run")
            time.sleep(poll_s)
            for name, (proc, t0, _) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode != 0:
                    failed.append(name)
                    print(f"{name}: FAILED (exit {proc.returncode}); log: {log_dir / f'{name}.log'}", flush=True)
                    continue
                done[name] = round((time.monotonic() - t0) / 60, 2)
                print(f"{name}: done in {done[name]:.1f} min (build so far {(time.monotonic() - start) / 60:.1f} min)",
                      flush=True)
                if on_done is not None:
                    on_done(name, done[name])
    finally:  # interrupted (Ctrl-C) or crashed: no orphaned chapter keeps running
        for proc, _, _ in running.values():
            proc.terminate()
    if failed:
        logs = ", ".join(str(log_dir / f"{n}.log") for n in failed)
        raise BuildError(f"{', '.join(failed)} failed; not started: {', '.join(pending) or 'none'}; see {logs}")
    return done
