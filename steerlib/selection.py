"""Which snapshot of a run to use, and the typed result every chapter reads: :class:`RunResult`.

One selection function, :func:`select`, serves vector runs and weight runs (LoRA, full fine-tune): it
evaluates every candidate snapshot on the *validation* split (vector snapshots of several runs in one
routed batch; weight snapshots one after another) and keeps the best step per run. Its choice is
cached atomically in the run directory (``selection.json``) together with what it depends on
(snapshot contents, number of problems, forced prefix, sampling settings), so a later chapter reuses
it and a change of any of these recomputes it. The authors picked the best of five checkpoints by the
*test* benchmarks' average (see the book's notes on the authors' code); choosing on validation keeps
the test split untouched.

Example:
    >>> run = vector_run(org, preset, [5], RunLayout(Path("runs/organism")).single_layer(5))  # doctest: +SKIP
    >>> run.step, round(run.validation_pass_at_1, 3), run.vectors[0].layer     # doctest: +SKIP
    (60, 0.85, 5)
    >>> sweep = layer_vectors(org, preset, RunLayout(Path("runs/organism")))    # doctest: +SKIP
    >>> sweep.vectors[5] is not None, sweep.choices[5].step                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from steerlib.loaded import LoadedModel
from steerlib.atomic import write_json
from steerlib.evaluate import EvalResult
from steerlib.preset_eval import evaluate_configs, evaluate_runs, evaluate_weights  # re-exported for chapters
from steerlib.presets import Preset
from steerlib.recipes import TrainResult, train_vectors, train_weights
from steerlib.rloo import signal_share
from steerlib.runs import RunLayout
from steerlib.stats import Estimate
from steerlib.steering import Site, SteeringVector
from steerlib.vectorfile import load_vectors, save_vectors

__all__ = [
    "Choice",
    "RunResult",
    "Sweep",
    "select",
    "loaded_snapshot",
    "vector_run",
    "weight_run",
    "layer_vectors",
    "evaluate_configs",
    "evaluate_weights",
    "baselines",
    "evaluate_runs",
    "orthogonal_runs",
    "orthogonal_gap",
    "post_attn_runs",
    "adaptive_runs",
]


@dataclass(frozen=True)
class Choice:
    """The chosen snapshot of one run: its step, file and validation pass@1 with standard error."""

    step: int
    path: Path
    validation_pass_at_1: float
    validation_stderr: float


@dataclass
class RunResult:
    """A trained run and its chosen snapshot.

    Attributes:
        train: the recipe's record (metrics, timings, snapshots, the trainable).
        choice: the best snapshot on the validation split.
        site: where the run's vectors are added (vector runs).
    """

    train: TrainResult
    choice: Choice
    site: Site = "resid_post"

    @property
    def step(self) -> int:
        return self.choice.step

    @property
    def validation_pass_at_1(self) -> float:
        return self.choice.validation_pass_at_1

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return self.train.metrics

    @property
    def signal_share(self) -> float:
        """The share of the run's prompt groups that carried a learning signal (:class:`TrainResult`)."""
        return self.train.signal_share

    @property
    def lr(self) -> float:
        """The run's learning rate (from its manifest)."""
        return float(json.loads((self.train.run_dir / "manifest.json").read_text())["params"]["rloo.lr"])

    @property
    def train_seconds(self) -> float:
        return self.train.train_seconds

    @property
    def median_step_seconds(self) -> float:
        return self.train.median_step_seconds

    def summary(self) -> dict[str, float]:
        """learning rate, chosen step, validation pass@1, final and lowest mean training reward, seconds."""
        rewards = [m["reward_mean"] for m in self.metrics]
        return {
            "lr": self.lr,
            "best_step": self.step,
            "validation_pass_at_1": self.validation_pass_at_1,
            "final_reward": rewards[-1] if rewards else float("nan"),
            "min_reward": min(rewards) if rewards else float("nan"),
            "train_seconds": self.train_seconds,
        }

    @property
    def vectors(self) -> list[SteeringVector]:
        """The chosen snapshot's vectors (vector runs only)."""
        if not self.train.kind.startswith("vectors"):
            raise TypeError(f"a {self.train.kind} run has no vectors; use loaded_snapshot(run)")
        return load_vectors(self.choice.path, self._model(), site=self.site).vectors

    def _model(self) -> Any:
        assert self.train.trainable is not None
        return self.train.trainable.model

    @contextlib.contextmanager
    def loaded(self) -> Iterator[Any]:
        """The weight run's model with the chosen snapshot loaded (restored on exit)."""
        with loaded_snapshot(self.train, self.choice.step) as model:
            yield model


@dataclass
class Sweep:
    """The layer sweep: the best vector of every layer and the runs that trained them."""

    mode: str
    choices: dict[int, Choice]
    vectors: dict[int, SteeringVector]
    runs: list[TrainResult] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return float(sum(r.train_seconds for r in self.runs))

    @property
    def median_step_seconds(self) -> float:
        """Median seconds per step of the sweep (summed over runs when sequential)."""
        return float(sum(r.median_step_seconds for r in self.runs))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The multiplexed run's metrics, or the last layer's run when sequential."""
        return self.runs[-1].metrics if self.runs else []

    @property
    def signal_share(self) -> float:
        """The share of the sweep's prompt groups (every run, every step) that carried a learning signal."""
        return signal_share([r for run in self.runs for r in run.pass_rates])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@contextlib.contextmanager
def loaded_snapshot(result: TrainResult, step: int) -> Iterator[Any]:
    """A weight run's model with snapshot ``step`` loaded; the previous weights are restored on exit."""
    from safetensors.torch import load_file

    if result.trainable is None or result.kind.startswith("vectors"):
        raise TypeError("loaded_snapshot needs a LoRA or full fine-tune run")
    tensors = result.trainable.named_tensors()
    saved = load_file(str(result.snapshots[step]))
    before = {k: t.detach().clone() for k, t in tensors.items()}
    with torch.no_grad():
        for k, t in tensors.items():
            t.copy_(saved[k])
    try:
        yield result.trainable.model
    finally:
        with torch.no_grad():
            for k, t in tensors.items():
                t.copy_(before[k])


def select(
    org: LoadedModel,
    preset: Preset,
    runs: dict[str, TrainResult],
    cache: str | Path,
    *,
    n_problems: int = 200,
    prefix: str = "",
    files: dict[str, dict[int, Path]] | None = None,
    split: str = "validation",
    progress: bool = False,
) -> dict[str, Choice]:
    """The best snapshot step of every run on the validation split, cached in ``cache``. A run with a
    single snapshot keeps it unevaluated (its validation pass@1 is NaN).

    Args:
        runs: run name -> its record (vector runs are evaluated together in one routed batch,
            weight runs one snapshot after another).
        cache: the JSON file that keeps the choice (rewritten when anything it depends on changed).
        prefix: text forced after every prompt (for vectors trained with a prompt suffix).
        files: per-run candidate files instead of the runs' own snapshots (per-layer splits of a
            multiplexed sweep).
        split: ``validation`` (the default), or ``test`` to reproduce the authors' protocol (the best
            checkpoint by the test benchmarks' Average; the chapters then say so).
    """
    files = files or {name: r.snapshots for name, r in runs.items()}
    key = {
        "split": split,
        "n_problems": n_problems,
        "prefix": prefix,
        "seed": preset.seed,
        "model": preset.model,
        "max_new_tokens": preset.max_new_tokens,
        "temperature": preset.temperature,
        "files": {name: {str(s): _sha(p) for s, p in sorted(f.items())} for name, f in files.items()},
    }
    cache = Path(cache)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return {
                name: Choice(c["step"], files[name][c["step"]], c["pass_at_1"], c["stderr"])
                for name, c in saved["choices"].items()
            }
    from types import SimpleNamespace

    scores: dict[tuple[str, int], EvalResult] = {}
    kw: dict[str, Any] = dict(split=split, n_problems=n_problems, prefix=prefix, progress=progress)
    only = {n: next(iter(f)) for n, f in files.items() if len(f) == 1}  # one candidate: nothing to choose
    vector_files = {(n, s): p for n, f in files.items() if runs[n].kind.startswith("vectors") and n not in only
                    for s, p in f.items()}
    if vector_files:
        configs = {k: load_vectors(p, org.model, site=runs[k[0]].site).vectors for k, p in sorted(vector_files.items())}
        scores.update(evaluate_configs(org, preset, configs, **kw))  # type: ignore[arg-type]
    for name, f in files.items():
        if runs[name].kind.startswith("vectors") or name in only:
            continue
        for step in sorted(f):
            with loaded_snapshot(runs[name], step) as model:
                here = SimpleNamespace(model=model, tokenizer=org.tokenizer)
                scores[(name, step)] = evaluate_configs(here, preset, {"run": []}, **kw)["run"]
    nan = float("nan")
    choices: dict[str, Choice] = {n: Choice(step, files[n][step], nan, nan) for n, step in only.items()}
    for (name, step), r in sorted(scores.items()):
        if name not in choices or r.pass_at_1 > choices[name].validation_pass_at_1:
            choices[name] = Choice(step, files[name][step], r.pass_at_1, r.stderr)
    write_json(
        cache,
        {
            "key": key,
            "choices": {
                n: {"step": c.step, "pass_at_1": c.validation_pass_at_1, "stderr": c.validation_stderr}
                for n, c in choices.items()
            },
        },
    )
    return choices


def vector_run(
    org: LoadedModel,
    preset: Preset,
    layers: Sequence[int],
    run_dir: str | Path,
    *,
    val_problems: int = 200,
    prefix: str = "",
    select_on: str = "validation",
    **train_kwargs: Any,
) -> RunResult:
    """Train (or resume, or read back) a vector run and choose its snapshot on validation.

    ``prefix`` is both appended to the training prompts and forced during selection (the prefix
    control of chapter 04). Other keyword arguments go to :func:`steerlib.recipes.train_vectors`.
    """
    res = train_vectors(org, preset, layers, run_dir, prompt_suffix=prefix, **train_kwargs)
    choice = select(org, preset, {"run": res}, res.run_dir / "selection.json", n_problems=val_problems, prefix=prefix,
                    split=select_on)["run"]
    return RunResult(res, choice, train_kwargs.get("site", "resid_post"))


def weight_run(
    org: LoadedModel,
    preset: Preset,
    kind: Literal["lora", "full"],
    run_dir: str | Path,
    *,
    val_problems: int = 200,
    select_on: str = "validation",
    **train_kwargs: Any,
) -> RunResult:
    """Train (or resume) a LoRA / full fine-tune run and choose its snapshot on validation."""
    res = train_weights(org, preset, kind, run_dir, **train_kwargs)
    choice = select(org, preset, {"run": res}, res.run_dir / "selection.json", n_problems=val_problems,
                    split=select_on)["run"]
    return RunResult(res, choice)


def _split_multiplexed(org: LoadedModel, res: TrainResult, layers: Sequence[int]) -> dict[str, dict[int, Path]]:
    """One vector file per layer and snapshot of a multiplexed sweep (written once)."""
    files: dict[str, dict[int, Path]] = {f"layer {layer}": {} for layer in layers}
    for step, path in sorted(res.snapshots.items()):
        for v in load_vectors(path, org.model, site=res.site).vectors:
            out = res.run_dir / f"layer-{v.layer}-step-{step}.safetensors"
            if not out.exists():
                save_vectors(out, [v], model=org.model, training={"sweep": "multiplexed", "step": step})
            files[f"layer {v.layer}"][step] = out
    return files


def layer_vectors(
    org: LoadedModel,
    preset: Preset,
    layout: RunLayout,
    *,
    mode: Literal["auto", "multiplexed", "sequential"] = "auto",
    layers: Sequence[int] | None = None,
    val_problems: int = 200,
    select_on: str = "validation",
    progress: bool = True,
) -> Sweep:
    """The layer sweep's best vector for every layer (or ``layers``), as later chapters use them.

    Trains (or resumes, or reads back) the sweep in ``layout`` (``auto``: multiplexed when every
    layer shares one learning rate, else one run per layer), splits a multiplexed sweep's snapshots
    into one file per layer, and chooses each layer's best snapshot on validation (all layers in one
    routed batch; cached in the sweep's ``selection.json``).
    """
    layers = list(range(preset.n_layers)) if layers is None else sorted(layers)
    if mode == "auto":
        mode = "multiplexed" if len({preset.lr_for(layer) for layer in layers}) == 1 else "sequential"
    if mode not in ("multiplexed", "sequential"):
        raise ValueError(f"sweep mode must be auto, multiplexed or sequential, not {mode!r}")
    if mode == "multiplexed":
        sweep = train_vectors(org, preset, layers, layout.sweep(), mode="multiplexed", progress=progress)
        results, files = [sweep], _split_multiplexed(org, sweep, layers)
        runs = dict.fromkeys(files, sweep)
        cache = sweep.run_dir / "selection.json"
    else:
        results = [
            train_vectors(org, preset, [layer], layout.single_layer(layer), progress=progress) for layer in layers
        ]
        runs = {f"layer {layer}": r for layer, r in zip(layers, results)}
        files = {name: r.snapshots for name, r in runs.items()}
        cache = layout.sequential_selection()
    chosen = select(org, preset, runs, cache, n_problems=val_problems, files=files, split=select_on)
    choices = {int(name.split()[1]): c for name, c in chosen.items()}
    vectors = {layer: load_vectors(c.path, org.model, site="resid_post").vectors[0] for layer, c in choices.items()}
    return Sweep(mode, choices, vectors, results)


def baselines(org: LoadedModel, preset: Preset, layout: RunLayout, *, val_problems: int = 200,
              select_on: str = "validation", names: Sequence[str] | None = None) -> dict[str, RunResult]:
    """The comparison runs of the layer curve: all-layer steering, LoRA and a full fine-tune, each
    trained (or resumed) in ``layout`` with the preset's recipe and chosen on ``select_on``; ``names``:
    only these of ``"all layers"``, ``"LoRA"``, ``"full fine-tune"`` (default all three)."""
    kw: dict[str, Any] = dict(val_problems=val_problems, select_on=select_on)
    makers: dict[str, Callable[[], RunResult]] = {
        "all layers": lambda: vector_run(org, preset, list(range(preset.n_layers)), layout.all_layer(),
                                         mode="all_layer", **kw),
        "LoRA": lambda: weight_run(org, preset, "lora", layout.lora(), **kw),
        "full fine-tune": lambda: weight_run(org, preset, "full", layout.full_ft(), **kw),
    }
    unknown = sorted(set(names or ()) - set(makers))
    if unknown:
        raise ValueError(f"no baseline {', '.join(unknown)}; baselines: {', '.join(makers)}")
    return {name: make() for name, make in makers.items() if names is None or name in names}


# -- the analyses' own runs ------------------------------------------------------------------------
def orthogonal_runs(org: LoadedModel, preset: Preset, vector: SteeringVector, layout: RunLayout, n: int, *,
                    val_problems: int = 200) -> dict[str, SteeringVector]:
    """Retrain at ``vector``'s layer ``n`` times, each run orthogonal to the original and every
    earlier one (its component in their span removed in every forward pass); each run's best snapshot
    on validation. Returns ``{"orthogonal 1": v1, ...}``.

    Example:
        >>> orth = orthogonal_runs(org, preset, vecs[5], RunLayout(Path("runs/organism")), 2)  # doctest: +SKIP
    """
    basis, out = [vector.vector.detach()], {}
    for k in range(1, n + 1):
        run = vector_run(org, preset, [vector.layer], layout.orthogonal(vector.layer, k),
                         orthogonal_to=torch.stack(basis), val_problems=val_problems)
        out[f"orthogonal {k}"] = run.vectors[0]
        basis.append(out[f"orthogonal {k}"].vector.detach())
    return out


def orthogonal_gap(pass_at_1: Mapping[str, float], stderr: Mapping[str, float]) -> Estimate:
    """The original vector's pass@1 minus the best orthogonal vector's (keys ``"original"`` and
    ``"orthogonal k"``, as :func:`orthogonal_runs` names them; other keys are ignored), with the error of
    a difference of two independent estimates (NaN where an error is missing).

    Example:
        >>> gap = orthogonal_gap({"original": 0.8, "orthogonal 1": 0.5, "orthogonal 2": 0.6, "base": 0.3},
        ...                      {"original": 0.01, "orthogonal 1": 0.02, "orthogonal 2": 0.02})
        >>> round(gap.estimate, 3), round(gap.se, 5)  # 0.8 - 0.6, sqrt(0.01^2 + 0.02^2)
        (0.2, 0.02236)
    """
    orth = {k: v for k, v in pass_at_1.items() if k.startswith("orthogonal")}
    best = max(orth, key=orth.__getitem__)
    ses = [stderr.get("original"), stderr.get(best)]
    se = math.sqrt(sum(x * x for x in ses)) if all(x is not None for x in ses) else math.nan  # type: ignore[misc]
    return Estimate(pass_at_1["original"] - orth[best], se)


def post_attn_runs(org: LoadedModel, preset: Preset, layer: int, layout: RunLayout, *,
                   factors: Sequence[float] = (1.0, 0.1), val_problems: int = 200) -> dict[str, RunResult]:
    """Retrain layer ``layer``'s vector after that block's attention (site ``post_attn``) at the
    preset's learning rate times each factor. Returns ``{label: RunResult}`` with labels ``preset lr``
    and ``lr / 10`` (or ``lr x f``).

    Example:
        >>> sorted(post_attn_runs(org, preset, 2, RunLayout(Path("runs/organism"))))  # doctest: +SKIP
        ['lr / 10', 'preset lr']
    """
    out = {}
    for f in factors:
        lr = preset.lr_for(layer) * f
        label = "preset lr" if f == 1.0 else ("lr / 10" if f == 0.1 else f"lr x {f:g}")
        out[label] = vector_run(org, preset, [layer], layout.post_attn(layer, None if f == 1.0 else lr),
                                site="post_attn", lr=lr, val_problems=val_problems)
    return out


def adaptive_runs(org: LoadedModel, preset: Preset, layers: Sequence[int], layout: RunLayout, *,
                  val_problems: int = 200) -> dict[int, RunResult]:
    """A rank-1 LoRA on each layer's ``down_proj`` trained with the RLOO recipe at the preset's
    ``adaptive_lr`` (one run per layer, :meth:`RunLayout.adaptive`), each chosen on validation:
    ``{layer: RunResult}``.

    Example:
        >>> runs = adaptive_runs(org, preset, [3, 4], RunLayout(Path("runs/organism")))  # doctest: +SKIP
    """
    return {layer: weight_run(org, preset, "lora", layout.adaptive(layer), layers=[layer], rank=1,
                              lr=preset.adaptive_lr, val_problems=val_problems) for layer in layers}
