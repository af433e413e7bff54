"""Training recipes on top of the RLOO kernel: one layer, every layer (sequential or multiplexed),
all-layer steering, LoRA and full fine-tuning; checkpoint selection on a validation split.

Every run writes into its own run directory (manifest, metrics, checkpoint, snapshots at the preset's
checkpoint steps) and is resumed from it when interrupted. The paper picks the best of five
checkpoints by the *test* benchmarks' average; here the best snapshot is chosen on a validation split
disjoint from the test problems, and the chapters say so.

Example:
    >>> preset = resolve_preset("organism")                                        # doctest: +SKIP
    >>> res = train_vectors(org, preset, layers=[5], run_dir="runs/organism/l5")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from steerlib.evaluate import EvalResult, evaluate, summarise
from steerlib.presets import Preset
from steerlib.rloo import FullTrainable, LoraTrainable, RLOOConfig, Trainable, VectorTrainable, train
from steerlib.runs import RunDir
from steerlib.steering import SteeringVector, zero_vectors
from steerlib.vectorfile import load_vectors, save_vectors

__all__ = [
    "TrainResult", "rloo_config", "train_vectors", "train_weights", "split_prompts", "select_best",
    "evaluate_vector_files", "evaluate_weights",
]


@dataclass
class TrainResult:
    """What a training recipe returns."""

    run_dir: Path
    seconds: float
    metrics: list[dict[str, Any]]
    snapshots: dict[int, Path] = field(default_factory=dict)  # step -> vector file / tensor file
    trainable: Trainable | None = None

    @property
    def step_seconds(self) -> list[float]:
        """Wall seconds of each step (generation + reward + loss/backward), across resumed sessions."""
        return [m["seconds_generation"] + m["seconds_reward"] + m["seconds_loss_backward"] for m in self.metrics]

    @property
    def train_seconds(self) -> float:
        """Total training seconds (sum over steps)."""
        return float(sum(self.step_seconds))

    @property
    def median_step_seconds(self) -> float:
        """Median seconds per step: robust to a transient load on the machine."""
        steps = sorted(self.step_seconds)
        return float(steps[len(steps) // 2]) if steps else float("nan")


def rloo_config(preset: Preset, lr: float, **overrides: Any) -> RLOOConfig:
    """The kernel's configuration for a preset and learning rate."""
    base = dict(prompts_per_step=preset.prompts_per_step, completions_per_prompt=preset.completions_per_prompt,
                steps=preset.steps, lr=lr, max_grad_norm=preset.max_grad_norm, temperature=preset.temperature,
                top_p=preset.top_p, max_new_tokens=preset.max_new_tokens, seed=preset.seed,
                checkpoint_every=min(preset.checkpoints))
    base.update(overrides)
    return RLOOConfig(**base)


def split_prompts(preset: Preset, tokenizer: Any, split: str, n: int | None = None) -> tuple[list[str], list[str]]:
    """(prompts, answers) of the preset's training source or the organism's validation/test split."""
    from steerlib.data import load_problems, render_prompt

    if preset.train_source == "organism":
        probs = load_problems("organism", n=n or (20000 if split == "train" else 1000), split=split,
                              seed=preset.seed)
    else:
        probs = load_problems(preset.train_source, n=n)
    return [render_prompt(p, preset.template, tokenizer) for p in probs], [p.answer for p in probs]


def _run(trainable: Trainable, tok: Any, preset: Preset, cfg: RLOOConfig, run_dir: str | Path,
         params: dict[str, Any], snapshot: Any, progress: bool) -> TrainResult:
    prompts, answers = split_prompts(preset, tok, "train")
    run = RunDir.open(run_dir, {"preset": preset.name, **params,
                                **{f"rloo.{k}": v for k, v in cfg.__dict__.items()}})
    start = time.perf_counter()

    def on_step(step_done: int) -> None:
        if step_done in preset.checkpoints:
            snapshot(run.path / f"snapshot-{step_done}.safetensors")

    rows = train(trainable, tok, prompts, answers, cfg, run_dir=run, progress=progress, on_step=on_step)
    # snapshots on disk, also those written by an earlier, interrupted session of this run
    paths = {step: run.path / f"snapshot-{step}.safetensors" for step in preset.checkpoints}
    snaps = {step: path for step, path in paths.items() if path.exists()}
    return TrainResult(run.path, time.perf_counter() - start, rows, snaps, trainable)


def train_vectors(
    org: Any,
    preset: Preset,
    layers: Sequence[int],
    run_dir: str | Path,
    *,
    mode: Literal["single", "multiplexed", "all_layer"] = "single",
    lr: float | None = None,
    progress: bool = True,
    **cfg_overrides: Any,
) -> TrainResult:
    """Train steering vectors.

    Args:
        layers: one layer for ``single``; the layers of a sweep for ``multiplexed`` (each prompt group
            routed to one layer's vector, own Adam state, same prompts for every layer); the layers
            steered together for ``all_layer``.
        lr: learning rate (default: the preset's per-layer table, or ``all_layer_lr``).
    """
    model, tok = org.model, org.tokenizer
    for layer in layers:
        preset.check_layer(layer)
    if mode == "single" and len(layers) != 1:
        raise ValueError("mode='single' trains exactly one layer")
    if mode == "multiplexed":
        lrs = {preset.lr_for(l) for l in layers}
        if lr is None and len(lrs) > 1:
            raise ValueError("a multiplexed sweep shares one learning rate; pass lr=")
        lr = lr if lr is not None else lrs.pop()
    elif lr is None:
        lr = preset.all_layer_lr if mode == "all_layer" else preset.lr_for(layers[0])
    vecs = zero_vectors(model, layers, routed=mode == "multiplexed")
    cfg = rloo_config(preset, lr, **cfg_overrides)
    params = {"kind": f"vectors-{mode}", "layers": list(layers)}
    snap = lambda path: save_vectors(path, vecs, model=model, training=params)  # noqa: E731
    return _run(VectorTrainable(model, vecs), tok, preset, cfg, run_dir, params, snap, progress)


def train_weights(
    org: Any,
    preset: Preset,
    kind: Literal["lora", "full"],
    run_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    rank: int | None = None,
    lr: float | None = None,
    progress: bool = True,
    **cfg_overrides: Any,
) -> TrainResult:
    """Train a PEFT LoRA on ``down_proj`` (``kind="lora"``) or every weight (``kind="full"``)."""
    from safetensors.torch import save_file

    if kind == "lora":
        r = rank or preset.lora_rank
        tr: Trainable = LoraTrainable(org.model, layers=layers, r=r, alpha=r, seed=preset.seed)
        lr = lr or preset.lora_lr
        params: dict[str, Any] = {"kind": "lora", "rank": r, "layers": list(layers) if layers else None}
    else:
        tr = FullTrainable(org.model)
        lr = lr or preset.full_ft_lr
        params = {"kind": "full"}
    cfg = rloo_config(preset, lr, **cfg_overrides)

    def snap(path: Path) -> Path:
        save_file({k: v.detach().cpu().contiguous() for k, v in tr.named_tensors().items()}, str(path))
        return path

    return _run(tr, org.tokenizer, preset, cfg, run_dir, params, snap, progress)


def select_best(
    org: Any,
    preset: Preset,
    snapshots: dict[str, dict[int, Path]],
    *,
    n_problems: int = 200,
    progress: bool = False,
) -> dict[str, tuple[int, float]]:
    """Best snapshot step per run on the validation split, all vector runs in one routed batch.

    Args:
        snapshots: run name -> {step: vector file}.

    Returns:
        run name -> (best step, validation pass@1).
    """
    tok = org.tokenizer
    prompts, answers = split_prompts(preset, tok, "validation", n_problems)
    vectors: list[SteeringVector] = []
    keys: list[tuple[str, int]] = []
    for name, steps in snapshots.items():
        for step, path in sorted(steps.items()):
            route = len(keys)
            for v in load_vectors(path, org.model).vectors:
                v.route = route
                vectors.append(v)
            keys.append((name, step))
    all_prompts = [p for _ in keys for p in prompts]
    all_answers = [a for _ in keys for a in answers]
    routes = [r for r in range(len(keys)) for _ in prompts]
    res = evaluate(org.model, tok, all_prompts, all_answers, vectors=vectors, routes=routes,
                   max_new_tokens=preset.max_new_tokens, progress=progress)
    n = len(prompts)
    best: dict[str, tuple[int, float]] = {}
    for r, (name, step) in enumerate(keys):
        acc = sum(res.per_problem[r * n:(r + 1) * n]) / n
        if name not in best or acc > best[name][1]:
            best[name] = (step, acc)
    return best


def evaluate_vector_files(org: Any, preset: Preset, files: dict[str, Path], *, n_problems: int | None = None,
                          progress: bool = False) -> dict[str, EvalResult]:
    """Test-split pass@1 of several vector files in one routed batch (plus ``base`` without vectors)."""
    tok = org.tokenizer
    prompts, answers = split_prompts(preset, tok, "test", n_problems or preset.eval_problems)
    names = ["base", *files]
    vectors: list[SteeringVector] = []
    for r, name in enumerate(files, start=1):
        for v in load_vectors(files[name], org.model).vectors:
            v.route = r
            vectors.append(v)
    routes = [r if r else -1 for r in range(len(names)) for _ in prompts]
    res = evaluate(org.model, tok, [p for _ in names for p in prompts], [a for _ in names for a in answers],
                   vectors=vectors or None, routes=routes if vectors else None,
                   max_new_tokens=preset.max_new_tokens, progress=progress)
    n, out = len(prompts), {}
    for r, name in enumerate(names):
        comps = [c for c in res.completions if r * n <= c.prompt_index < (r + 1) * n]
        for c in comps:
            c.prompt_index -= r * n
        out[name] = summarise(comps, n, 1)
    return out



def evaluate_weights(org: Any, preset: Preset, result: TrainResult, *, split: str = "test",
                     n_problems: int | None = None, step: int | None = None,
                     progress: bool = False) -> dict[int, EvalResult]:
    """pass@1 of a LoRA / full fine-tune run's snapshots (all, or one ``step``) on a split."""
    from safetensors.torch import load_file

    assert result.trainable is not None, "evaluate_weights needs the TrainResult of train_weights"
    tensors = result.trainable.named_tensors()
    prompts, answers = split_prompts(preset, org.tokenizer, split, n_problems or preset.eval_problems)
    out: dict[int, EvalResult] = {}
    for s, path in sorted(result.snapshots.items()):
        if step is not None and s != step:
            continue
        saved = load_file(str(path))
        with torch.no_grad():
            for k, t in tensors.items():
                t.copy_(saved[k])
        out[s] = evaluate(result.trainable.model, org.tokenizer, prompts, answers,
                          max_new_tokens=preset.max_new_tokens, progress=progress)
    return out
