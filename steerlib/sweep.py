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

from steerlib.evaluate import EvalResult, evaluate, evaluate_routed
from steerlib.presets import Preset
from steerlib.rloo import FullTrainable, LoraTrainable, RLOOConfig, Trainable, VectorTrainable, train
from steerlib.runs import RunDir
from steerlib.steering import Site, SteeringVector, zero_vectors
from steerlib.vectorfile import load_vectors, save_vectors

__all__ = [
    "TrainResult", "rloo_config", "train_vectors", "train_weights", "split_problems", "split_prompts", "select_best",
    "evaluate_vector_files", "evaluate_weights", "layer_vectors",
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


def split_problems(preset: Preset, split: str, n: int | None = None) -> list[Any]:
    """The preset's training source or the organism's validation/test split as ``MathProblem`` rows."""
    from steerlib.data import load_problems

    if preset.train_source == "organism":
        return load_problems("organism", n=n or (20000 if split == "train" else 1000), split=split, seed=preset.seed)
    return load_problems(preset.train_source, n=n)


def split_prompts(preset: Preset, tokenizer: Any, split: str, n: int | None = None) -> tuple[list[str], list[str]]:
    """(prompts, answers) of :func:`split_problems`, rendered with the preset's template."""
    from steerlib.data import render_prompt

    probs = split_problems(preset, split, n)
    return [render_prompt(p, preset.template, tokenizer) for p in probs], [p.answer for p in probs]


def _run(trainable: Trainable, tok: Any, preset: Preset, cfg: RLOOConfig, run_dir: str | Path,
         params: dict[str, Any], snapshot: Any, progress: bool, prompt_suffix: str = "") -> TrainResult:
    prompts, answers = split_prompts(preset, tok, "train")
    prompts = [p + prompt_suffix for p in prompts]
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
    site: Site = "resid_post",
    prompt_suffix: str = "",
    orthogonal_to: torch.Tensor | None = None,
    progress: bool = True,
    **cfg_overrides: Any,
) -> TrainResult:
    """Train steering vectors.

    Args:
        layers: one layer for ``single``; the layers of a sweep for ``multiplexed`` (each prompt group
            routed to one layer's vector, own Adam state, same prompts for every layer); the layers
            steered together for ``all_layer``.
        lr: learning rate (default: the preset's per-layer table, or ``all_layer_lr``).
        site: where the vectors are added (the paper's where-to-add runs move it).
        prompt_suffix: text appended to every training prompt (the prefix control of chapter 04).
        orthogonal_to: ``(k, d)`` or ``(d,)`` directions the trained vector must stay orthogonal to
            (the vector is used and saved with its component in their span removed).
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
    vecs = zero_vectors(model, layers, site, routed=mode == "multiplexed")
    cfg = rloo_config(preset, lr, **cfg_overrides)
    params: dict[str, Any] = {"kind": f"vectors-{mode}", "layers": list(layers)}
    if site != "resid_post":
        params["site"] = site
    if prompt_suffix:
        params["prompt_suffix"] = prompt_suffix
    if orthogonal_to is not None:
        params["orthogonal_to_sha"] = _tensor_sha(orthogonal_to)
    tr = VectorTrainable(model, vecs, orthogonal_to=orthogonal_to)
    snap = lambda path: save_vectors(path, tr.effective_vectors(), model=model, training=params)  # noqa: E731
    return _run(tr, tok, preset, cfg, run_dir, params, snap, progress, prompt_suffix)


def _tensor_sha(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


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
    prefix: str = "",
    progress: bool = False,
) -> dict[str, tuple[int, float]]:
    """Best snapshot step per run on the validation split, all vector runs in one routed batch.

    Args:
        snapshots: run name -> {step: vector file}.
        prefix: text forced after every prompt (for vectors trained with a prompt suffix).

    Returns:
        run name -> (best step, validation pass@1).
    """
    prompts, answers = split_prompts(preset, org.tokenizer, "validation", n_problems)
    configs = {(name, step): load_vectors(path, org.model).vectors
               for name, steps in snapshots.items() for step, path in sorted(steps.items())}
    res = evaluate_routed(org.model, org.tokenizer, prompts, answers, configs,  # type: ignore[arg-type]
                          max_new_tokens=preset.max_new_tokens, prefix=prefix, progress=progress)
    best: dict[str, tuple[int, float]] = {}
    for (name, step), r in res.items():  # type: ignore[misc]
        if name not in best or r.pass_at_1 > best[name][1]:
            best[name] = (step, r.pass_at_1)
    return best


def evaluate_vector_files(org: Any, preset: Preset, files: dict[str, Path], *, n_problems: int | None = None,
                          progress: bool = False) -> dict[str, EvalResult]:
    """Test-split pass@1 of several vector files in one routed batch (plus ``base`` without vectors)."""
    prompts, answers = split_prompts(preset, org.tokenizer, "test", n_problems or preset.eval_problems)
    configs = {"base": [], **{name: load_vectors(path, org.model).vectors for name, path in files.items()}}
    return evaluate_routed(org.model, org.tokenizer, prompts, answers, configs,
                           max_new_tokens=preset.max_new_tokens, progress=progress)


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


def layer_vectors(
    org: Any,
    preset: Preset,
    run_dir: str | Path,
    *,
    mode: Literal["auto", "multiplexed", "sequential"] = "auto",
    layers: Sequence[int] | None = None,
    val_problems: int = 200,
    progress: bool = True,
) -> dict[int, SteeringVector]:
    """The layer sweep's best vector for every layer (or ``layers``), as later chapters use them.

    Trains (or resumes) the sweep in ``run_dir`` (``auto``: multiplexed when every layer shares one
    learning rate, else one run per layer), splits each multiplexed snapshot into one file per layer
    (``sweep-multiplexed/layer-{l}-step-{s}.safetensors``), chooses each layer's best snapshot on the
    validation split and records the choice in ``run_dir/sweep-best.json`` (read back on later
    calls, so every chapter uses the same vectors).

    Example:
        >>> vecs = layer_vectors(org, resolve_preset("organism"), "runs/organism")  # doctest: +SKIP
        >>> vecs[5].layer, float(vecs[5].vector.norm())                          # doctest: +SKIP
    """
    import json

    run = Path(run_dir)
    layers = list(range(preset.n_layers)) if layers is None else sorted(layers)
    if mode == "auto":
        mode = "multiplexed" if len({preset.lr_for(l) for l in layers}) == 1 else "sequential"
    record = run / "sweep-best.json"
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("mode") == mode and sorted(int(l) for l in saved["layers"]) == layers:
            return {int(l): load_vectors(run / b["file"], org.model).vectors[0] for l, b in saved["layers"].items()}
    files: dict[str, dict[int, Path]] = {}
    if mode == "multiplexed":
        sweep = train_vectors(org, preset, layers, run / "sweep-multiplexed", mode="multiplexed", progress=progress)
        for step, path in sweep.snapshots.items():
            for v in load_vectors(path, org.model).vectors:
                out = run / "sweep-multiplexed" / f"layer-{v.layer}-step-{step}.safetensors"
                if not out.exists():
                    save_vectors(out, [v], model=org.model, training={"sweep": "multiplexed", "step": step})
                files.setdefault(f"layer {v.layer}", {})[step] = out
    else:
        for layer in layers:
            files[f"layer {layer}"] = train_vectors(org, preset, [layer], run / f"single-layer-{layer}",
                                                    progress=progress).snapshots
    chosen = select_best(org, preset, files, n_problems=val_problems)
    best = {name.split()[1]: {"step": step, "validation_pass_at_1": acc,
                              "file": str(files[name][step].relative_to(run))}
            for name, (step, acc) in chosen.items()}
    record.write_text(json.dumps({"mode": mode, "layers": best}, indent=1))
    return {int(l): load_vectors(run / b["file"], org.model).vectors[0] for l, b in best.items()}
