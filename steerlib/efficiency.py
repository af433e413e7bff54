"""What each training method costs: trainable parameters, optimizer state and update time.

The paper's efficiency argument (its precursor's table for Qwen2.5-14B: 14.7 B against 245 K trainable
parameters, 13.8 GB against 240 KB of optimizer memory, 9.94 s against 0.11 s per update) measured here
for the runs of chapter 02: the trainable parameters of each run, the bytes Adam keeps for them (two
float32 moments per parameter), and the median seconds per step of the loss pass and backward pass
(the update; generation is the same for every method and not counted).

Example:
    >>> round(adam_state_bytes(96) / 1024, 2)
    0.75
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

__all__ = ["PARAMETERS", "STATE", "UPDATE", "adam_state_bytes", "trainable_parameters", "median_update_seconds",
           "efficiency_rows", "PAPER_14B"]

#: The columns of a row.
PARAMETERS, STATE, UPDATE = "trainable parameters", "Adam state (bytes)", "update (s per step)"
#: The precursor paper's table for Qwen2.5-14B (full fine-tune vs all-layer steering), as the authors report it.
PAPER_14B = {"full fine-tune": {PARAMETERS: 14.7e9, STATE: 13.8e9, UPDATE: 9.94},
             "all-layer vectors": {PARAMETERS: 245e3, STATE: 240e3, UPDATE: 0.11}}


def adam_state_bytes(parameters: int) -> int:
    """Adam's two float32 moments per trainable parameter."""
    return 8 * parameters


def trainable_parameters(run: Any) -> int:
    """Trainable parameters of a run's trainable (vectors, LoRA factors or every weight)."""
    return int(sum(p.numel() for group in run.train.trainable.param_groups() for p in group))


def median_update_seconds(run: Any) -> float:
    """Median seconds per step of the loss pass and backward pass over the run's steps."""
    values = [m["seconds_loss_backward"] for m in run.metrics if "seconds_loss_backward" in m]
    return float(statistics.median(values)) if values else float("nan")


def efficiency_rows(runs: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per run: trainable parameters, Adam state bytes and median update seconds; the paper's 14B rows
    are added for comparison."""
    rows = {}
    for name, run in runs.items():
        n = trainable_parameters(run)
        rows[name] = {PARAMETERS: n, STATE: adam_state_bytes(n), UPDATE: median_update_seconds(run)}
    rows.update({f"paper, Qwen2.5-14B: {k}": v for k, v in PAPER_14B.items()})
    return rows
