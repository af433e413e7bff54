"""Train a chapter's vectors in several processes: ``torchrun --nproc_per_node N -m steerlib.launch``.

The runs land where the chapter looks for them (its default run directory), so the chapter, run
afterwards on one device, reads the finished run back and goes on to selection and evaluation. The
hub presets sample per prompt (``sampling="per_prompt"``), so a run is the same run however many
processes trained it (see :mod:`steerlib.distributed`).

Example (8 GPUs, then the chapter on one)::

    torchrun --nproc_per_node 8 -m steerlib.launch 01_training --preset qwen2.5-math-7b
    papermill book/chapters/01_training.ipynb out.ipynb -p preset qwen2.5-math-7b -p n_seeds 1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["main"]



def main(argv: list[str] | None = None) -> Any:
    """Parse the arguments, join the process group, train; returns the run's :class:`TrainResult`."""
    from steerlib.chapter import run_dir_for
    from steerlib.chapters import TRAINING
    from steerlib.distributed import init_from_env
    from steerlib.presets import load_model, resolve_preset
    from steerlib.recipes import train_vectors
    from steerlib.runs import RunLayout

    ap = argparse.ArgumentParser(prog="python -m steerlib.launch", description=__doc__.splitlines()[0])
    ap.add_argument("chapter", choices=(TRAINING,))
    ap.add_argument("--preset", default="qwen2.5-math-7b")
    ap.add_argument("--layer", type=int, default=None, help="layer to steer (default: the last)")
    ap.add_argument("--run-dir", default=None, help="default: the chapter's (runs/<preset>)")
    args = ap.parse_args(argv)
    preset = resolve_preset(args.preset, layer=args.layer)
    if preset.sampling != "per_prompt":
        raise SystemExit(f"preset {preset.name} samples per batch; a multi-process run needs sampling='per_prompt'")
    dp = init_from_env()
    device = None
    import torch

    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.current_device()}"
    org = load_model(preset, device=device)
    layer = preset.default_layer
    run_dir = RunLayout(Path(args.run_dir) if args.run_dir else run_dir_for(preset, {})).single_layer(layer)
    if dp.main:
        print(f"{args.chapter}: layer {layer} of {preset.name} on {dp.world} processes -> {run_dir}")
    return train_vectors(org, preset, [layer], run_dir, progress=dp.main, dp=dp)


if __name__ == "__main__":
    main()
