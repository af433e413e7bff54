"""Run directories: manifest, metrics, atomic checkpoints, resume.

A run directory holds ``manifest.json`` (every parameter, package versions, seed, git revision),
``metrics.jsonl`` (one line per step, appended), ``checkpoint.safetensors`` + ``checkpoint.json``
(written atomically: temporary file, then rename) and final artefacts such as vector files. Opening a
directory whose manifest records *different* parameters is refused, never silently reused. Nothing is
loaded with pickle.

Where each run of a chapter lives inside the chapter's run directory is :class:`RunLayout`'s word: it
names every run folder (single-layer, all-layer, LoRA, full fine-tune, the multiplexed sweep, the
analyses' runs) and the one seed convention (another training seed's runs in ``seed<k>/`` with the same
names), so chapters, build tasks and analyses that mean the same run find the same folder.

Example:
    >>> RunLayout(Path("runs/organism")).for_seed(2, base=0).single_layer(5).as_posix()
    'runs/organism/seed2/single-layer-5'
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

__all__ = ["RunDir", "RunLayout", "RunMismatchError", "RunFileError", "environment"]


@dataclass(frozen=True)
class RunLayout:
    """Every run folder under one run directory ``root`` (see the module docstring).

    Example:
        >>> layout = RunLayout(Path("runs/x"))
        >>> [p.name for p in (layout.sweep(), layout.all_layer(), layout.full_ft(), layout.orthogonal(4, 1))]
        ['sweep-multiplexed', 'all-layer', 'full-ft', 'orthogonal-4-1']
        >>> layout.for_seed(0, base=0) == layout
        True
    """

    root: Path

    def for_seed(self, seed: int, *, base: int) -> RunLayout:
        """The layout of training seed ``seed``'s runs: this one for the preset's own seed ``base`` (where
        later chapters read it), else ``root/seed<k>`` with the same folder names inside."""
        return self if seed == base else RunLayout(self.root / f"seed{seed}")

    def single_layer(self, layer: int) -> Path:
        """A vector trained at one layer."""
        return self.root / f"single-layer-{layer}"

    def sweep(self) -> Path:
        """The multiplexed layer sweep (one vector per layer, one run)."""
        return self.root / "sweep-multiplexed"

    def sequential_selection(self) -> Path:
        """The snapshot choice of a sequential sweep (one single-layer run per layer)."""
        return self.root / "sequential-selection.json"

    def all_layer(self) -> Path:
        """A vector at every layer, trained together."""
        return self.root / "all-layer"

    def lora(self) -> Path:
        """The LoRA comparison run."""
        return self.root / "lora"

    def full_ft(self) -> Path:
        """The full fine-tune comparison run."""
        return self.root / "full-ft"

    def prefix(self, layer: int) -> Path:
        """A vector retrained with the boosted token appended to every prompt (the prefix control)."""
        return self.root / f"prefix-{layer}"

    def orthogonal(self, layer: int, k: int) -> Path:
        """The ``k``-th vector retrained orthogonal to the original and the ones before it."""
        return self.root / f"orthogonal-{layer}-{k}"

    def post_attn(self, layer: int, lr: float | None = None) -> Path:
        """A vector added after the attention block instead of after the whole block (``lr``: when it
        is not the preset's)."""
        return self.root / f"where-post-attn-{layer}{'' if lr is None else f'-lr{lr:g}'}"

    def adaptive(self, layer: int) -> Path:
        """A rank-1 LoRA on one layer's ``down_proj`` (adaptive steering)."""
        return self.root / f"adaptive-{layer}"

    def transfer(self, model: str) -> RunLayout:
        """The layout of another model's own runs (transfer targets' own layer sweeps)."""
        return RunLayout(self.root / f"transfer-{model.replace('/', '_')}")

    @staticmethod
    def peft_adapter(run_dir: Path) -> Path:
        """Where a vector run's PEFT export is written, inside its run folder."""
        return Path(run_dir) / "peft-adapter"


class RunMismatchError(ValueError):
    """The run directory belongs to a run with other parameters."""


class RunFileError(ValueError):
    """A file of a run directory is damaged; the message names it and says what to delete."""


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
    def open(cls, path: str | os.PathLike, params: dict[str, Any], *, model: dict[str, Any] | None = None) -> RunDir:
        """Create the directory, or reopen it if its manifest has the same parameters and model.

        Args:
            model: what the run is bound to (see :func:`steerlib.recipes.model_binding`).

        Raises:
            RunMismatchError: the directory holds a run with other parameters or of another model.
            RunFileError: its manifest is damaged.
        """
        root = Path(path)
        params = json.loads(json.dumps(params))  # normalise (tuples -> lists, ...)
        manifest = root / "manifest.json"
        for stale in root.glob(".*.tmp") if root.is_dir() else []:  # left by a write that was killed
            stale.unlink(missing_ok=True)
        if manifest.exists():
            try:
                record = json.loads(manifest.read_text())
                old = record["params"]
            except (ValueError, KeyError, TypeError):  # bad JSON, bad bytes (UnicodeDecodeError), wrong shape
                raise RunFileError(f"{manifest} is damaged (not the manifest JSON steerlib writes): delete {root} "
                                   "to start this run again") from None
            recorded = record.get("model")
            if model is not None and recorded != json.loads(json.dumps(model)):
                was = "no model" if recorded is None else (
                    f"{recorded.get('model')!r} (weights {recorded.get('weights')}, "
                    f"tokenizer {recorded.get('tokenizer')})"
                )
                raise RunMismatchError(
                    f"{root} holds a run of {was}, not {model.get('model')!r} (weights {model.get('weights')}, "
                    f"tokenizer {model.get('tokenizer')}): use another run directory (a chapter derives one from its "
                    "parameters when run_dir is None) or delete this one"
                )
            if old != params:
                diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
                raise RunMismatchError(
                    f"{root} holds a run with other parameters ({', '.join(diff)}); "
                    "use another run directory or delete this one"
                )
        else:
            record = {"params": params, **({"model": model} if model is not None else {}), **environment()}
            atomic_write_text(manifest, json.dumps(record, indent=1))
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
        lines = [line for line in self.metrics_path.read_text(errors="replace").splitlines() if line.strip()]
        rows = []
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                if i == len(lines) - 1:  # a torn last line: the append was interrupted; resume drops it
                    break
                raise RunFileError(f"{self.metrics_path}, line {i + 1}, is not a metrics row: delete {self.path} "
                                   "to start this run again") from None
            rows.append(row)
        return rows

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
        try:
            with safe_open(str(target), framework="pt") as f:
                state = json.loads((f.metadata() or {})["state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            int(state["step"])
        except Exception as err:  # noqa: BLE001 - any damage: a truncated file, foreign bytes, broken metadata
            raise RunFileError(f"{target} is damaged ({type(err).__name__}): delete it and {self.metrics_path.name} "
                               f"to restart this run from step 0, or delete {self.path}") from None
        return tensors, state
