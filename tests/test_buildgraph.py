"""The build graph: order, side-by-side tasks, failures; and the book's own graph."""

import sys
import time

import pytest

from steerlib.book import build_tasks, chapter_sources
from steerlib.chapters import CHAPTERS
from steerlib.buildgraph import BuildError, Task, critical_paths, run_graph


def _stamp(path, name, sleep=0.0):
    """A command that appends 'start name t' and 'end name t' to ``path`` (wall-clock stamps)."""
    code = (f"import time; f = open({str(path)!r}, 'a'); f.write('start {name} %f\\n' % time.time()); f.flush(); "
            f"time.sleep({sleep}); f.write('end {name} %f\\n' % time.time())")
    return (sys.executable, "-c", code)


def _events(path):
    out = {}
    for line in path.read_text().splitlines():
        kind, name, t = line.split()
        out[(kind, name)] = float(t)
    return out


def test_needs_are_respected_and_independent_tasks_overlap(tmp_path):
    log = tmp_path / "events.txt"
    tasks = [Task("a", command=_stamp(log, "a", 0.6)), Task("b", command=_stamp(log, "b", 0.6)),
             Task("c", needs=("a", "b"), command=_stamp(log, "c"))]
    done = run_graph(tasks, jobs=2, log_dir=tmp_path / "logs", poll_s=0.05)
    ev = _events(log)
    assert set(done) == {"a", "b", "c"}
    assert ev[("start", "b")] < ev[("end", "a")] and ev[("start", "a")] < ev[("end", "b")]  # side by side
    assert ev[("start", "c")] >= max(ev[("end", "a")], ev[("end", "b")])  # after what it needs


def test_one_job_runs_one_task_at_a_time_longest_path_first(tmp_path):
    log = tmp_path / "events.txt"
    tasks = [Task("short", command=_stamp(log, "short", 0.1)), Task("long", command=_stamp(log, "long", 0.1)),
             Task("wide", slots=2, command=_stamp(log, "wide", 0.1))]
    run_graph(tasks, jobs=1, minutes={"long": 9.0, "short": 1.0, "wide": 5.0}, log_dir=tmp_path, poll_s=0.05)
    ev = _events(log)
    order = sorted(["short", "long", "wide"], key=lambda n: ev[("start", n)])
    assert order == ["long", "wide", "short"]  # by planned path; a 2-slot task runs alone with 1 job
    for a, b in zip(order, order[1:]):
        assert ev[("end", a)] <= ev[("start", b)]


def test_a_multi_slot_task_is_not_starved_by_one_slot_tasks(tmp_path):
    log = tmp_path / "events.txt"
    tasks = [Task("root", command=_stamp(log, "root")),
             Task("busy", command=_stamp(log, "busy", 0.8)),  # holds one slot while "wide" becomes ready
             Task("wide", needs=("root",), slots=2, command=_stamp(log, "wide", 0.1)),
             *[Task(f"t{i}", needs=("root",), command=_stamp(log, f"t{i}", 0.1)) for i in range(3)]]
    minutes = {"busy": 1.0, "root": 20.0, "t0": 9.0, "t1": 9.0, "t2": 9.0, "wide": 1.0}
    run_graph(tasks, jobs=2, minutes=minutes, log_dir=tmp_path, poll_s=0.05)
    ev = _events(log)
    assert ev[("end", "root")] < ev[("end", "busy")]  # a slot was free while "busy" ran, and nothing took it
    assert ev[("start", "wide")] >= ev[("end", "busy")]
    assert ev[("start", "wide")] < min(ev[("start", f"t{i}")] for i in range(3))


def test_a_failure_names_the_task_and_starts_nothing_after_it(tmp_path):
    log = tmp_path / "events.txt"
    tasks = [Task("bad", command=(sys.executable, "-c", "raise SystemExit(3)")),
             Task("after", needs=("bad",), command=_stamp(log, "after"))]
    t0 = time.monotonic()
    with pytest.raises(BuildError, match=r"bad failed; not started: after; see .*bad\.log"):
        run_graph(tasks, jobs=2, log_dir=tmp_path, poll_s=0.05)
    assert not log.exists() and time.monotonic() - t0 < 30


def test_bad_graphs_are_one_clear_error():
    with pytest.raises(BuildError, match="unknown task"):
        critical_paths([Task("a", needs=("x",))], {})
    with pytest.raises(BuildError, match="cycle"):
        critical_paths([Task("a", needs=("b",)), Task("b", needs=("a",))], {})


def test_the_books_graph_covers_every_chapter_and_is_acyclic():
    names = [s.stem for s in chapter_sources()]
    assert list(CHAPTERS) == names  # the registry and the sources name the same chapters, in order
    tasks = {t.name: t for t in build_tasks(threads=1)}
    assert set(names) <= set(tasks)
    paths = critical_paths(list(tasks.values()), {})  # raises on a cycle or an unknown name
    assert paths["organism-main"] == max(paths.values())  # everything waits on the main organism
    for later in ("03_persistence", "04_logit_lens", "05_attention_ablation", "06_transfer", "07_adaptive",
                  "08_diffsae"):
        assert "run-sweep-seed0" in tasks[later].needs  # they read chapter 02's seed-0 sweep (a task of its own)
    assert tasks["organism-main"].slots == 2  # pretrained with 2 threads (its weights depend on it)
    assert tasks["organism-llama"].slots == 1
    assert tasks["organism-tuned"].needs == ("organism-main",) and "organism-tuned" in tasks["06_transfer"].needs


def test_a_build_can_keep_a_chapter_as_published():
    from steerlib.book import ChapterError, build_all

    kept = {t.name: t for t in build_tasks(threads=1, skip=["09_real_lm", "04_logit_lens"])}
    assert "09_real_lm" not in kept and "04_logit_lens" not in kept and "01_training" in kept
    critical_paths(list(kept.values()), {})  # still a closed graph: no task waits on a chapter left out
    with pytest.raises(ChapterError, match="no chapter '99_nope' to skip"):
        build_all(jobs=1, skip=["99_nope"])  # refused before anything runs
