"""Training recipes on top of the RLOO kernel: one layer, every layer (multiplexed), all-layer
steering, LoRA and full fine-tuning.

Every run writes into its own run directory (manifest, metrics, checkpoint, snapshots at the preset's
checkpoint steps) and is resumed from it when interrupted; calling a recipe on a finished run returns
its record without training again. Which snapshot to use is decided in :mod:`steerlib.selection`.

Example:
    >>> preset = resolve_preset("organism")                                        # doctest: +SKIP
    >>> res = train_vectors(org, preset, layers=[5], run_dir="runs/organism/l5")   # doctest: +SKIP
    >>> sorted(res.snapshots)                                                       # doctest: +SKIP
    [20, 30, 40, 50, 60]
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from steerlib.loaded import LoadedModel
from steerlib.data import split_prompts, stop_token_ids
from steerlib.presets import Preset
from steerlib.distributed import DataParallel
from steerlib.rloo import (CHECKPOINT_MINUTES, Engine, FullTrainable, LoraTrainable, RLOOConfig, Trainable,
                           VectorTrainable, manifest_params, signal_share, train)
from steerlib.runs import RunDir
from steerlib.steering import Site, zero_vectors
from steerlib.vectorfile import save_vectors

__all__ = ["TrainResult", "rloo_config", "engine_for", "train_vectors", "train_weights", "model_binding"]


@dataclass
class TrainResult:
    """What a training recipe returns: the run's record and its snapshots on disk."""

    run_dir: Path
    seconds: float
    metrics: list[dict[str, Any]]
    snapshots: dict[int, Path] = field(default_factory=dict)  # step -> vector file / tensor file
    trainable: Trainable | None = None
    kind: str = "vectors"  # vectors-<mode> | lora | full
    site: str = "resid_post"  # where a vector run's vectors are added

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

    @property
    def signal_share(self) -> float:
        """The share of prompt groups, over every step, that carried a learning signal
        (:func:`~steerlib.rloo.signal_share`): 0 means every group all passed or all failed at every step,
        so RLOO had no gradient and the run learned nothing, whatever its evaluation says (NaN: no steps).

        Example:
            >>> steps = [{"prompt_pass_rates": [0.0, 0.5]}, {"prompt_pass_rates": [1.0, 1.0]}]
            >>> TrainResult(Path("r"), 0.0, steps).signal_share
            0.25
        """
        return signal_share(self.pass_rates)

    @property
    def pass_rates(self) -> list[float]:
        """Every prompt group's pass rate, step after step (the groups RLOO trained on)."""
        return [r for m in self.metrics for r in m.get("prompt_pass_rates", ())]


def rloo_config(preset: Preset, lr: float) -> RLOOConfig:
    """The recipe for a preset and learning rate (what a run directory records).

    Example:
        >>> from steerlib.presets import resolve_preset
        >>> rloo_config(resolve_preset("organism"), 0.05).completions_per_prompt
        8
    """
    base = dict(
        prompts_per_step=preset.prompts_per_step,
        completions_per_prompt=preset.completions_per_prompt,
        steps=preset.steps,
        lr=lr,
        max_grad_norm=preset.max_grad_norm,
        temperature=preset.temperature,
        top_p=preset.top_p,
        max_new_tokens=preset.max_new_tokens,
        seed=preset.seed,
        sampling=preset.sampling,
        cut_reward=0.0 if preset.cut_is_wrong else None,
    )
    return RLOOConfig(**base)


def engine_for(preset: Preset) -> Engine:
    """How a preset's runs are computed: the one place that chooses the :class:`~steerlib.rloo.Engine`
    (a checkpoint at every snapshot step or every :data:`~steerlib.rloo.CHECKPOINT_MINUTES` minutes,
    whichever comes first, the preset's logit budget where it sets one, the loss pass from the rollout's
    hidden state unless the preset turns it off, a shared prompt prefix where the preset asks; the rest from the
    device). Never recorded: it changes float rounding, not the run.

    Example:
        >>> from steerlib.presets import resolve_preset
        >>> engine_for(resolve_preset("organism", steps=30)).checkpoint_every
        10
    """
    return Engine(checkpoint_every=min(preset.checkpoints), checkpoint_minutes=CHECKPOINT_MINUTES,
                  logit_elements=preset.logit_elements, loss_from_rollout=preset.loss_from_rollout,
                  shared_prefix=preset.shared_prefix)


def _run(
    trainable: Trainable,
    tok: Any,
    preset: Preset,
    cfg: RLOOConfig,
    run_dir: str | Path,
    params: dict[str, Any],
    snapshot: Callable[[Path], Any],
    progress: bool,
    prompt_suffix: str = "",
    binding: dict[str, Any] | None = None,
    dp: DataParallel | None = None,
    engine: Engine | None = None,
) -> TrainResult:
    prompts, answers = split_prompts(preset, tok, "train", append=prompt_suffix)
    dp = dp or DataParallel()
    if not dp.main:  # the main rank writes the manifest first
        dp.barrier()
    run = RunDir.open(run_dir, {"preset": preset.name, **params, **manifest_params(cfg)},
                      model=binding)
    if dp.main:
        dp.barrier()
    start = time.perf_counter()

    def on_step(step_done: int) -> None:
        if step_done in preset.checkpoints:
            snapshot(run.path / f"snapshot-{step_done}.safetensors")

    rows = train(trainable, tok, prompts, answers, cfg, run_dir=run, progress=progress, on_step=on_step,
                 stop_ids=stop_token_ids(tok, preset.template), dp=dp, engine=engine or engine_for(preset))
    # snapshots on disk, also those written by an earlier, interrupted session of this run
    paths = {step: run.path / f"snapshot-{step}.safetensors" for step in preset.checkpoints}
    snaps = {step: path for step, path in paths.items() if path.exists()}
    return TrainResult(run.path, time.perf_counter() - start, rows, snaps, trainable, str(params["kind"]))


def train_vectors(
    org: LoadedModel,
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
    dp: DataParallel | None = None,
    engine: Engine | None = None,
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
        dp: this process's place in a data-parallel group (:mod:`steerlib.distributed`); the preset
            must sample ``per_prompt``.
        engine: how the steps are computed (default :func:`engine_for` the preset).
    """
    model, tok = org.model, org.tokenizer
    for layer in layers:
        preset.check_layer(layer)
    if mode == "single" and len(layers) != 1:
        raise ValueError("mode='single' trains exactly one layer")
    if mode == "multiplexed":
        lrs = {preset.lr_for(layer) for layer in layers}
        if lr is None and len(lrs) > 1:
            raise ValueError("a multiplexed sweep shares one learning rate; pass lr=")
        lr = lr if lr is not None else lrs.pop()
    elif lr is None:
        lr = preset.all_layer_lr if mode == "all_layer" else preset.lr_for(layers[0])
    vecs = zero_vectors(model, layers, site, routed=mode == "multiplexed")
    cfg = rloo_config(preset, lr)
    params: dict[str, Any] = {"kind": f"vectors-{mode}", "layers": list(layers)}
    if site != "resid_post":
        params["site"] = site
    if prompt_suffix:
        params["prompt_suffix"] = prompt_suffix
    if orthogonal_to is not None:
        params["orthogonal_to_sha"] = _tensor_sha(orthogonal_to)
    tr = VectorTrainable(model, vecs, orthogonal_to=orthogonal_to)

    def snap(path: Path) -> Path:
        return save_vectors(path, tr.effective_vectors(), model=model, training=params)

    result = _run(tr, tok, preset, cfg, run_dir, params, snap, progress, prompt_suffix, model_binding(org, preset), dp,
                  engine)
    result.site = site
    return result


def model_binding(org: LoadedModel, preset: Preset) -> dict[str, Any]:
    """What a run is bound to: the model (name, weights hash or hub revision) and its tokenizer (a hash
    of the vocabulary). A run directory refuses to resume on anything else.

    Example:
        >>> from steerlib.organism import load_organism                      # doctest: +SKIP
        >>> model_binding(load_organism("tiny"), resolve_preset("organism", model="tiny"))["model"]  # doctest: +SKIP
        'tiny'
    """
    info = getattr(org, "info", None) or {}
    weights = info.get("weights_sha256") or getattr(org.model.config, "_commit_hash", None) or "unknown"
    vocab = sorted(org.tokenizer.get_vocab().items()) if hasattr(org.tokenizer, "get_vocab") else []
    tok = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
    return {"model": preset.model, "weights": str(weights)[:16], "tokenizer": tok}


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def train_weights(
    org: LoadedModel,
    preset: Preset,
    kind: Literal["lora", "full"],
    run_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    rank: int | None = None,
    lr: float | None = None,
    progress: bool = True,
    engine: Engine | None = None,
) -> TrainResult:
    """Train a PEFT LoRA on ``down_proj`` (``kind="lora"``) or every weight (``kind="full"``).

    The trainable keeps its own weights (a PEFT-wrapped copy for LoRA; the model itself for a full
    fine-tune, restored by :func:`steerlib.selection.loaded_snapshot` after each evaluation).
    """
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
    cfg = rloo_config(preset, lr)

    def snap(path: Path) -> Path:
        save_file({k: v.detach().cpu().contiguous() for k, v in tr.named_tensors().items()}, str(path))
        return path

    return _run(tr, org.tokenizer, preset, cfg, run_dir, params, snap, progress, binding=model_binding(org, preset),
                engine=engine)
