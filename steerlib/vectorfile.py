"""The steering-vector file format and export to a standard PEFT LoRA adapter.

A vector file is a ``.safetensors`` file whose tensors are ``vector.0``, ``vector.1``, ... and whose
metadata key ``steerlib`` holds JSON recording everything needed to put each vector back where it
was trained: the operation (``add``), the site, the 0-based layer, the KV group, the scale, the hidden
size, the dtype, the model id / revision and the training parameters. Loading checks the hidden size,
layer range, site and model against the target model and refuses a mismatch, because a vector added
at the wrong place degrades a model silently.

Example:
    >>> save_vectors("s5.safetensors", vecs, model=model, training={"lr": 0.05})  # doctest: +SKIP
    >>> loaded = load_vectors("s5.safetensors", model=model, site="resid_post")  # doctest: +SKIP
    >>> export_peft(loaded.vectors[0], model, "adapter/")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from steerlib.arch import model_id, model_parts
from steerlib.atomic import atomic_write
from steerlib.steering import SITES, SteeringVector

__all__ = [
    "FORMAT",
    "VectorFile",
    "VectorFileError",
    "same_model",
    "save_vectors",
    "load_vectors",
    "export_peft",
    "PeftParity",
    "peft_parity",
]

FORMAT = "steerlib.vectors/1"


class VectorFileError(ValueError):
    """A vector file is malformed or does not fit the model it is loaded for."""


@dataclass
class VectorFile:
    """What :func:`load_vectors` returns: the vectors and the file's metadata."""

    vectors: list[SteeringVector]
    meta: dict[str, Any] = field(default_factory=dict)


def save_vectors(
    path: str | os.PathLike,
    vectors: Sequence[SteeringVector],
    *,
    model: nn.Module,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write vectors and their placement to ``path`` atomically.

    Args:
        path: destination ``.safetensors`` file.
        vectors: the vectors (their ``route`` is not saved: routing is a property of a batch).
        model: the model they were trained on (hidden size, id and revision are recorded).
        training: JSON-serialisable training parameters to keep with the vectors.

    Returns:
        The path written.
    """
    parts = model_parts(model)
    cfg = parts.causal_lm.config
    tensors = {f"vector.{i}": v.vector.detach().cpu().contiguous() for i, v in enumerate(vectors)}
    meta = {
        "format": FORMAT,
        "op": "add",
        "layer_index_base": 0,
        "hidden_size": parts.hidden_size,
        "n_layers": parts.n_layers,
        "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", "") if tensors else "",
        "model_id": model_id(model),
        "model_revision": str(getattr(cfg, "_commit_hash", "") or ""),
        "model_type": str(getattr(cfg, "model_type", "")),
        "training": training or {},
        "vectors": [
            {"name": f"vector.{i}", "layer": v.layer, "site": v.site, "kv_group": v.kv_group, "scale": v.scale}
            for i, v in enumerate(vectors)
        ],
    }
    out = Path(path)
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"steerlib": json.dumps(meta)}))
    return out


def _read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors of a vector file; every kind of damage is a :class:`VectorFileError` that
    names the file (truncated or foreign bytes, broken metadata JSON, missing fields)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("steerlib")
            if raw is None:
                raise VectorFileError(f"{path} has no steerlib metadata: refusing to guess its site and layer")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except VectorFileError:
        raise
    except FileNotFoundError:
        raise VectorFileError(f"{path}: no such vector file") from None
    except Exception as err:  # noqa: BLE001 - safetensors raises its own errors for damaged bytes
        raise VectorFileError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); "
                              "it is damaged or truncated: delete it and re-create it") from None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise VectorFileError(f"{path}: its steerlib metadata is not valid JSON ({err.msg})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise VectorFileError(f"{path}: unsupported format {found!r} (expected {FORMAT})")
    for key in ("hidden_size", "vectors"):
        if key not in meta:
            raise VectorFileError(f"{path}: its metadata lacks the field {key!r}")
    return meta, tensors


def same_model(recorded: str, target: str) -> bool:
    """Whether a vector file's recorded model id names ``target``. Files written before GGUF loads had
    their own id recorded the cache folder (``.../pypi/<first 16 hex of the file's sha256>``): such a
    file matches the id ``<model>@gguf-<those 16 hex>`` of the same file.

    Example:
        >>> same_model("/root/.cache/steerlib/pypi/1d9614638d18024d", "Qwen/X@gguf-1d9614638d18024d")
        True
        >>> same_model("/root/.cache/steerlib/pypi/ffff", "Qwen/X@gguf-1d9614638d18024d")
        False
    """
    if recorded == target:
        return True
    _, sep, digest = target.rpartition("@gguf-")
    return bool(sep) and Path(recorded).name == digest


def load_vectors(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    site: str | None = None,
    allow_other_model: bool = False,
    device: str | torch.device | None = None,
) -> VectorFile:
    """Read a vector file and check it against ``model``.

    Args:
        path: a file written by :func:`save_vectors`.
        model: the model the vectors will be applied to (checks hidden size, layers, KV groups and id).
        site: the site the caller expects; a file recorded at another site is refused.
        allow_other_model: accept a file recorded for another model id of the same width (transfer).
        device: where to put the tensors (default: the model's device, else CPU).

    Raises:
        VectorFileError: on a file without steerlib metadata or any mismatch.
    """
    meta, tensors = _read_file(path)
    if model is not None:
        parts = model_parts(model)
        device = device or next(parts.causal_lm.parameters()).device
        if meta["hidden_size"] != parts.hidden_size:
            raise VectorFileError(
                f"{path}: vectors have hidden size {meta['hidden_size']}, the model has {parts.hidden_size}"
            )
        target = model_id(model)
        if not allow_other_model and meta.get("model_id") and target and not same_model(meta["model_id"], target):
            raise VectorFileError(
                f"{path}: vectors were trained on {meta['model_id']!r}, not {target!r} "
                "(pass allow_other_model=True to transfer them)"
            )
    vectors = []
    for entry in meta["vectors"]:
        missing = [k for k in ("name", "layer", "site", "kv_group", "scale") if k not in entry]
        if missing:
            raise VectorFileError(f"{path}: a vector entry lacks the field(s) {', '.join(missing)}")
        if entry["name"] not in tensors:
            raise VectorFileError(f"{path}: metadata names tensor {entry['name']!r}, which the file does not hold")
        if tensors[entry["name"]].shape != (meta["hidden_size"],):
            raise VectorFileError(f"{path}: tensor {entry['name']!r} has shape {tuple(tensors[entry['name']].shape)}, "
                                  f"but the file records hidden size {meta['hidden_size']}")
        if entry["site"] not in SITES:
            raise VectorFileError(f"{path}: unknown site {entry['site']!r}")
        if site is not None and entry["site"] != site:
            raise VectorFileError(f"{path}: vector recorded at site {entry['site']!r}, expected {site!r}")
        if model is not None:
            if not 0 <= entry["layer"] < parts.n_layers:
                raise VectorFileError(
                    f"{path}: layer {entry['layer']} does not exist in a {parts.n_layers}-layer model"
                )
            if entry["kv_group"] is not None and not 0 <= entry["kv_group"] < parts.n_kv_groups:
                raise VectorFileError(f"{path}: KV group {entry['kv_group']} does not exist in the model")
        t = tensors[entry["name"]]
        vectors.append(
            SteeringVector(
                t.to(device) if device is not None else t,
                layer=int(entry["layer"]),
                site=entry["site"],
                kv_group=entry["kv_group"],
                scale=float(entry["scale"]),
            )
        )
    return VectorFile(vectors, meta)


def export_peft(vector: SteeringVector, model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Export a ``resid_post`` vector as a PEFT LoRA adapter that reproduces it exactly.

    The adapter is a LoRA on layer ``l``'s ``mlp.down_proj`` with ``r=1, lora_alpha=1,
    lora_bias=True``: ``lora_B.weight`` is zero and ``lora_B.bias`` is ``scale * s``, so the adapter adds
    exactly ``scale * s`` to the layer's output. ``PeftModel.from_pretrained(base, out_dir)`` serves it
    without steerlib.

    Args:
        vector: a ``resid_post`` vector.
        model: the model it belongs to.
        out_dir: adapter folder to write (``adapter_config.json``, ``adapter_model.safetensors``).
    """
    from peft import LoraConfig

    if vector.site != "resid_post":
        raise ValueError(f"only resid_post vectors export to a down_proj LoRA, not {vector.site!r}")
    parts = model_parts(model)
    parts.check_layer(vector.layer)
    down = parts.layers[vector.layer].mlp.down_proj
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = LoraConfig(
        r=1,
        lora_alpha=1,
        lora_dropout=0.0,
        lora_bias=True,
        target_modules=["down_proj"],
        layers_to_transform=[vector.layer],
        task_type="CAUSAL_LM",
        base_model_name_or_path=model_id(model) or None,
    )
    cfg.save_pretrained(str(out))
    gen = torch.Generator().manual_seed(0)
    dtype = down.weight.dtype
    a = torch.randn(1, down.in_features, generator=gen, dtype=torch.float32) / down.in_features**0.5
    prefix = f"base_model.model.model.layers.{vector.layer}.mlp.down_proj"
    tensors = {
        f"{prefix}.lora_A.weight": a.to(dtype),
        f"{prefix}.lora_B.weight": torch.zeros(down.out_features, 1, dtype=dtype),
        # cast first, then scale, in the model's dtype: exactly what the steering hook adds
        f"{prefix}.lora_B.bias": (vector.vector.detach().to("cpu", dtype) * vector.scale).contiguous(),
    }
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out


@dataclass
class PeftParity:
    """How exactly an exported adapter reproduces the hook (see :func:`peft_parity`)."""

    adapter: Path
    max_logit_diff: float
    hook_pass_at_1: float
    peft_pass_at_1: float
    identical_completions: float


def peft_parity(
    vector: SteeringVector,
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> PeftParity:
    """Export ``vector`` as a PEFT adapter and compare it with the hook: the largest logit difference
    on the first prompt, and pass@1 plus the share of identical completions when both sample the same
    prompts with the same seed. The model itself is not modified (PEFT wraps a copy).

    Example:
        >>> parity = peft_parity(vec, model, tok, "runs/adapter", prompts, answers)  # doctest: +SKIP
        >>> parity.max_logit_diff < 1e-4                                             # doctest: +SKIP
        True
    """
    import copy

    from peft import PeftModel

    from steerlib.evaluate import evaluate
    from steerlib.steering import steer

    adapter = export_peft(vector, model, out_dir)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(adapter)).eval()
    ids = tokenizer(list(prompts[:1]), return_tensors="pt", add_special_tokens=False)["input_ids"]
    ids = ids.to(next(model.parameters()).device)
    with torch.no_grad(), steer(model, vector):
        hook_logits = model(ids).logits
    with torch.no_grad():
        peft_logits = peft_model(input_ids=ids).logits
    via_hook = evaluate(model, tokenizer, prompts, answers, vectors=[vector], max_new_tokens=max_new_tokens, seed=seed)
    via_peft = evaluate(peft_model, tokenizer, prompts, answers, max_new_tokens=max_new_tokens, seed=seed)
    same = [a.text == b.text for a, b in zip(via_hook.completions, via_peft.completions)]
    return PeftParity(
        adapter,
        float((hook_logits - peft_logits).abs().max()),
        via_hook.pass_at_1,
        via_peft.pass_at_1,
        sum(same) / max(1, len(same)),
    )
