"""Moving steering vectors between models of the same width, and the normalised gain.

Normalised gain (the paper's exact definition was not found; this is the most likely one, PAPER.md
5.7): ``(acc_target+transferred − acc_target) / (acc_target+own − acc_target)``, the share of the
target's own steering gain that the donor's vector recovers at the same layer (1 = as good as its own
vector, 0 = no gain, < 0 = harmful).

Example:
    >>> moved = transfer_vectors(main_vecs, target.model)                   # doctest: +SKIP
    >>> normalized_gain(0.61, 0.35, 0.80)
    0.5777777777777777
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from steerlib.arch import model_parts
from steerlib.evaluate import EvalResult, evaluate_routed
from steerlib.steering import SteeringVector

__all__ = ["transfer_vectors", "normalized_gain", "transfer_evaluation"]


def transfer_vectors(vectors: dict[int, SteeringVector], target: Any) -> dict[int, SteeringVector]:
    """Copies of ``vectors`` placed on ``target`` (same layer and site; width and depth checked).

    Raises:
        ValueError: the target's hidden size differs, or it lacks one of the layers.
    """
    parts = model_parts(target)
    device = next(parts.causal_lm.parameters()).device
    out = {}
    for layer, v in vectors.items():
        if v.vector.shape[-1] != parts.hidden_size:
            raise ValueError(f"cannot transfer a {v.vector.shape[-1]}-dim vector to a model of width "
                             f"{parts.hidden_size}")
        parts.check_layer(v.layer)
        out[layer] = replace(v, vector=v.vector.detach().clone().to(device, torch.float32), route=None)
    return out


def normalized_gain(acc_transferred: float, acc_base: float, acc_own: float) -> float:
    """Share of the target's own steering gain recovered by a transferred vector (NaN if no own gain)."""
    gain = acc_own - acc_base
    return (acc_transferred - acc_base) / gain if gain else float("nan")


def transfer_evaluation(
    target: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    own: dict[int, SteeringVector],
    donors: dict[str, dict[int, SteeringVector]],
    **kwargs: Any,
) -> dict[str, Any]:
    """Base, own and every donor's vector per layer on the target, in one routed evaluation.

    Returns:
        ``{"results": {config: EvalResult}, "normalized_gain": {donor: {layer: gain}}}`` with configs
        named ``base``, ``own/{layer}`` and ``{donor}/{layer}``.
    """
    configs: dict[str, list[SteeringVector]] = {"base": []}
    configs.update({f"own/{l}": [v] for l, v in own.items()})
    for name, vecs in donors.items():
        configs.update({f"{name}/{l}": [v] for l, v in transfer_vectors(vecs, target).items() if l in own})
    res: dict[str, EvalResult] = evaluate_routed(target, tokenizer, prompts, answers, configs, **kwargs)
    base = res["base"].pass_at_1
    gains = {name: {l: normalized_gain(res[f"{name}/{l}"].pass_at_1, base, res[f"own/{l}"].pass_at_1)
                    for l in own if f"{name}/{l}" in res} for name in donors}
    return {"results": res, "normalized_gain": gains}
