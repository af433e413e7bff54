"""Adaptive (token-wise) steering: a rank-1 LoRA on one layer's ``down_proj`` read as a steering vector.

A rank-1 LoRA on ``down_proj`` adds ``c_t · B`` to the residual stream after the layer, where ``B`` is a
fixed direction (``lora_B``, ``d``-dim) and ``c_t = scaling · (A · m_t)`` a per-token magnitude computed
from the MLP's intermediate activation ``m_t`` (the paper's adaptive steering, Section 10): a steering
vector whose size is chosen token by token. This module reads ``B`` and the per-token magnitudes ``|c_t|
· |B|`` of a trained :class:`~steerlib.rloo.LoraTrainable`, normalised by the mean norm of the layer's
output, and labels prompt tokens by segment (template before the problem, the problem, template after
it).

Example:
    >>> tr = LoraTrainable(model, layers=[3], r=1, alpha=1)                      # doctest: +SKIP
    >>> direction(tr, 3).shape                                                   # doctest: +SKIP
    torch.Size([96])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from steerlib.arch import model_parts
from steerlib.stats import Estimate, mean_estimate
from steerlib.steering import SteeringVector
from steerlib.traces import Forced, layer_modules, record, run

__all__ = [
    "lora_parts",
    "direction",
    "token_magnitudes",
    "segment_labels",
    "segment_means",
    "MagnitudeStudy",
    "magnitude_study",
    "rescaled",
    "scale_curve",
    "chosen_direction",
]


def lora_parts(trainable: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(B (d,), A (m,), scaling)`` of the rank-1 LoRA on layer ``layer``'s ``down_proj``."""
    down = model_parts(trainable.model).layers[layer].mlp.down_proj
    if not hasattr(down, "lora_A"):
        raise ValueError(f"layer {layer}'s down_proj carries no LoRA")
    name = next(iter(down.lora_A))
    a, b = down.lora_A[name].weight.detach(), down.lora_B[name].weight.detach()
    if a.shape[0] != 1:
        raise ValueError(f"expected a rank-1 LoRA, got rank {a.shape[0]}")
    return b[:, 0].float().cpu(), a[0].float().cpu(), float(down.scaling[name])


def direction(trainable: Any, layer: int) -> torch.Tensor:
    """The LoRA's fixed output direction ``B`` (unnormalised)."""
    return lora_parts(trainable, layer)[0]


@torch.no_grad()
def token_magnitudes(trainable: Any, forced: Forced, layer: int, *, batch_size: int = 64) -> list[np.ndarray]:
    """Per real token of each sequence: ``|c_t| · |B|`` / mean ``|h_layer|`` (the adapter active)."""
    b, a, scaling = lora_parts(trainable, layer)
    model = trainable.model
    down = model_parts(model).layers[layer].mlp.down_proj
    out: list[np.ndarray] = []
    store: dict[str, torch.Tensor] = {}
    hook = down.register_forward_hook(lambda _m, args, _o: store.__setitem__("m", args[0].detach()))
    mags, norms = [], []
    try:
        for batch in forced.batches(batch_size):
            with record(model, {layer: layer_modules(model)[layer]}) as rec:
                run(model, batch, logits_to_keep=1)  # activations only
            real = batch.real_mask()
            c = (store["m"].float().cpu() @ a) * scaling  # (B, T)
            h = rec[layer].float().cpu().norm(dim=-1)
            for r in range(c.shape[0]):
                mags.append((c[r][real[r]].abs() * float(b.norm())).numpy())
                norms.append(h[r][real[r]].numpy())
    finally:
        hook.remove()
    mean_norm = float(np.concatenate(norms).mean())
    for m in mags:
        out.append(m / mean_norm)
    return out


def segment_labels(tokenizer: Any, prompt: str, problem: str, n_completion: int) -> list[str]:
    """A label per token of prompt + completion: ``before problem``, ``problem``, ``after problem``
    (template text around the problem statement, e.g. system prompt and role tokens) or ``generated``.

    Uses the tokenizer's character offsets; ``problem`` must occur in ``prompt``.
    """
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    lo = prompt.find(problem)
    if lo < 0:
        raise ValueError("the problem text does not occur in the prompt")
    hi = lo + len(problem)
    labels = []
    for start, end in enc["offset_mapping"]:
        if end <= lo:
            labels.append("before problem")
        elif start >= hi:
            labels.append("after problem")
        else:
            labels.append("problem")
    return labels + ["generated"] * n_completion


def segment_means(mags: Sequence[np.ndarray], labels: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean magnitude per segment label over all sequences."""
    acc: dict[str, list[float]] = {}
    for m, lab in zip(mags, labels):
        for v, l_ in zip(m, lab):
            acc.setdefault(l_, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


@dataclass
class MagnitudeStudy:
    """Where one layer's adapter puts its magnitude (see :func:`magnitude_study`)."""

    segments: dict[str, float]  # segment -> mean normalised magnitude
    example_tokens: list[str]  # the first sequence's tokens
    example_magnitudes: np.ndarray  # and their magnitudes
    per_prompt: list[dict[str, float]] = field(default_factory=list)  # each sequence's segment -> mean magnitude

    def problem_excess(self) -> Estimate:
        """Per prompt, the mean magnitude on the problem's tokens minus the mean on the template's prompt
        tokens (before and after the problem, pooled); the mean over prompts with its standard error.

        Example:
            >>> rows = [{"problem": 0.5, "template": 0.2}, {"problem": 0.3, "template": 0.2}]
            >>> m = MagnitudeStudy({}, [], np.zeros(0), rows)
            >>> e = m.problem_excess(); round(e.estimate, 3), round(e.se, 3)
            (0.2, 0.1)
        """
        return mean_estimate([row["problem"] - row["template"] for row in self.per_prompt
                              if "problem" in row and "template" in row])


def magnitude_study(
    run: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    problems: Sequence[str],
    layer: int,
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> MagnitudeStudy:
    """Sample completions with the adapter's chosen snapshot loaded, then its per-token magnitudes,
    their mean per prompt segment, and one example sequence (the model is restored afterwards).

    Example:
        >>> m = magnitude_study(runs[5], tok, prompts, [p.problem for p in probs], 5)   # doctest: +SKIP
        >>> m.segments["problem"]                                                      # doctest: +SKIP
    """
    from steerlib.evaluate import generate
    from steerlib.traces import encode_pairs

    with run.loaded() as model:
        comps = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
        forced = encode_pairs(tokenizer, prompts, [c.token_ids for c in comps])
        mags = token_magnitudes(run.train.trainable, forced, layer)
    labels = [segment_labels(tokenizer, p, pr, len(c.token_ids)) for p, pr, c in zip(prompts, problems, comps)]
    ids = forced.ids[0][forced.mask[0].bool()].tolist()
    template = [[_TEMPLATE.get(x, x) for x in lab] for lab in labels]
    per_prompt = [segment_means([m], [lab]) for m, lab in zip(mags, template)]
    return MagnitudeStudy(segment_means(mags, labels), [tokenizer.decode([t]) for t in ids], mags[0], per_prompt)


_TEMPLATE = {"before problem": "template", "after problem": "template"}  # the prompt's tokens outside the problem


def rescaled(vectors: dict[int, SteeringVector], factors: Sequence[float]) -> dict[str, list[SteeringVector]]:
    """Every vector times every factor, named ``"{layer} x{factor:g}"`` (factor 0: no effect)."""
    return {f"{layer} x{f:g}": [replace(v, scale=f)] for layer, v in vectors.items() for f in factors}


def scale_curve(evals: dict[str, Any], layers: Sequence[int], factors: Sequence[float]) -> dict[str, dict[str, float]]:
    """pass@1 per layer and factor from the evaluation of :func:`rescaled` configurations."""
    return {str(layer): {f"{f:g}": evals[f"{layer} x{f:g}"].pass_at_1 for f in factors} for layer in layers}


def chosen_direction(run: Any, layer: int) -> torch.Tensor:
    """The direction ``B`` of an adaptive run's chosen snapshot (see :func:`steerlib.selection.adaptive_runs`)."""
    with run.loaded():
        return direction(run.train.trainable, layer).clone()
