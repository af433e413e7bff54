"""Run directories: manifest, metrics, atomic checkpoints, resume.

A run directory holds ``manifest.json`` (every parameter, package versions, seed, git revision),
``metrics.jsonl`` (one line per step, appended), ``checkpoint.safetensors`` + ``checkpoint.json``
(written atomically: temporary file, then rename) and final artefacts such as vector files. Opening a
directory whose manifest records *different* parameters is refused, never silently reused. Nothing is
loaded with pickle.

Example:
    >>> run = RunDir.open("runs/l5", params={"layer": 5, "lr": 0.05})  # doctest: +SKIP
    >>> run.log_metrics({"step": 0, "reward": 0.3})                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from steerlib.atomic import atomic_write, atomic_write_text

__all__ = ["RunDir", "RunMismatchError", "environment"]


class RunMismatchError(ValueError):
    """The run directory belongs to a run with other parameters."""


def _git_revision() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except Exception:  # noqa: BLE001
        return ""


def environment() -> dict[str, Any]:
    """Package versions, machine and git revision, for manifests and benchmark results."""
    versions = {}
    for pkg in ("torch", "transformers", "peft", "math-verify", "steerlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "git_revision": _git_revision(),
    }


@dataclass
class RunDir:
    """A run directory (see the module docstring)."""

    path: Path
    params: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike, params: dict[str, Any]) -> RunDir:
        """Create the directory, or reopen it if its manifest has the same parameters.

        Raises:
            RunMismatchError: the directory holds a run with other parameters.
        """
        root = Path(path)
        params = json.loads(json.dumps(params))  # normalise (tuples -> lists, ...)
        manifest = root / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())["params"]
            if old != params:
                diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
                raise RunMismatchError(
                    f"{root} holds a run with other parameters ({', '.join(diff)}); "
                    "use another run directory or delete this one"
                )
        else:
            atomic_write_text(manifest, json.dumps({"params": params, **environment()}, indent=1))
        return cls(root, params)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """All logged rows."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop metric rows with ``row['step'] >= step`` (rows written after the last checkpoint)."""
        rows = [r for r in self.metrics() if r.get("step", -1) < step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def save_checkpoint(
        self, tensors: dict[str, torch.Tensor], state: dict[str, Any], name: str = "checkpoint"
    ) -> None:
        """Atomically write ``name.safetensors``: the tensors, with ``state`` (JSON) in its metadata."""
        atomic_write(
            self.path / f"{name}.safetensors",
            lambda tmp: save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                tmp,
                metadata={"state": json.dumps(state)},
            ),
        )

    def load_checkpoint(self, name: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(tensors, state)`` of the last checkpoint, or ``None`` if there is none."""
        target = self.path / f"{name}.safetensors"
        if not target.exists():
            return None
        with safe_open(str(target), framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return tensors, state
