"""Shared helpers for the benchmark scripts: the machine record, timing, and results.json merging.

Every script measures its comparison side by side in one process on the same organism and merges
its figures into ``benchmarks/results.json`` under its own keys, with the machine it ran on.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, Any]:
    """CPU model, core count, torch threads and versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def record(values: dict[str, Any], *, timed: bool = True) -> dict[str, Any]:
    """Merge ``values`` into results.json (with a timestamp and, for ``timed`` figures, the machine that
    measured them) and return the whole file."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(values)
    if timed:
        data["machine"] = machine()
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def op_profile(fn: Callable[[], Any], groups: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """Self CPU milliseconds of one call of ``fn`` by op group (``groups``: name -> aten op names; the rest
    is ``other``), their ``total`` and the number of aten ops (``aten_ops``)."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    out = {g: sum(e.self_cpu_time_total for e in events if e.key in keys) / 1e3 for g, keys in groups.items()}
    grouped = {k for keys in groups.values() for k in keys}
    out["other"] = sum(e.self_cpu_time_total for e in events if e.key not in grouped) / 1e3
    out["total"] = sum(e.self_cpu_time_total for e in events) / 1e3
    out["aten_ops"] = sum(e.count for e in events)
    return out


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs: list[float]) -> float:
    """The median of a non-empty list."""
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def rloo_phase_times(
    trainer: Any, ids: list[list[int]], answers: list[str], steps: int, prompts: int
) -> list[tuple[float, float]]:
    """Wall seconds of the two phases of ``steps`` RLOO steps of ``trainer``, each on the next ``prompts``
    prompts (cycling): (rollouts and rewards, i.e. ``collect``; the loss pass and optimizer step, ``update``)."""
    out = []
    for s in range(steps):
        lo = (s * prompts) % len(ids)
        t0 = time.perf_counter()
        batch = trainer.collect(ids[lo : lo + prompts], answers[lo : lo + prompts])
        t1 = time.perf_counter()
        trainer.update(batch)
        out.append((t1 - t0, time.perf_counter() - t1))
    return out


def rloo_step_times(trainer: Any, ids: list[list[int]], answers: list[str], steps: int, prompts: int) -> list[float]:
    """Wall seconds of ``steps`` RLOO steps of ``trainer`` (both phases of :func:`rloo_phase_times`)."""
    return [a + b for a, b in rloo_phase_times(trainer, ids, answers, steps, prompts)]


def matmul_flops(m: int, k: int, n: int, repeat: int = 20) -> float:
    """FLOP/s of an ``(m, k) x (k, n)`` float32 matmul at the current thread count (median of ``repeat``)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    secs = median(timed(lambda: torch.mm(a, b), repeat))
    return 2 * m * k * n / secs
