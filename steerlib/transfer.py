"""Moving steering vectors between models of the same width, and the normalised gain.

Normalised gain (the paper's exact formula is not printed with its transfer results, Section 9 and Table
1; this is the most likely reading): ``(acc_target+transferred − acc_target) / (acc_target+own −
acc_target)``, the share of the target's own steering gain that the donor's vector recovers at the same
layer (1 = as good as its own vector, 0 = no gain, < 0 = harmful).

Example:
    >>> moved = transfer_vectors(main_vecs, target.model)                   # doctest: +SKIP
    >>> gain_share(0.61, 0.35, 0.80)
    0.5777777777777777
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from steerlib.arch import model_parts
from steerlib.evaluate import EvalResult, evaluate_routed
from steerlib.stats import Estimate, gain_share
from steerlib.steering import SteeringVector

__all__ = [
    "transfer_vectors",
    "transfer_evaluation",
    "own_vector_cosines",
    "TransferStudy",
    "transfer_study",
]


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
            raise ValueError(
                f"cannot transfer a {v.vector.shape[-1]}-dim vector to a model of width {parts.hidden_size}"
            )
        parts.check_layer(v.layer)
        out[layer] = replace(v, vector=v.vector.detach().clone().to(device, torch.float32), route=None)
    return out


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
    gains = {
        name: {
            l: gain_share(res[f"{name}/{l}"].pass_at_1, base, res[f"own/{l}"].pass_at_1)
            for l in own
            if f"{name}/{l}" in res
        }
        for name in donors
    }
    return {"results": res, "normalized_gain": gains}


def own_vector_cosines(
    own: dict[str, dict[int, SteeringVector]], layers: Sequence[int]
) -> dict[str, list[list[float]]]:
    """Per layer, the cosine between every two models' own vectors (rows and columns in ``own``'s order)."""
    names = list(own)
    return {
        f"layer {layer}": [
            [
                float(
                    torch.cosine_similarity(
                        own[a][layer].vector.float().cpu(), own[b][layer].vector.float().cpu(), dim=0
                    )
                )
                for b in names
            ]
            for a in names
        ]
        for layer in layers
    }


@dataclass
class TransferStudy:
    """Every model's vectors evaluated on every other model (see :func:`transfer_study`)."""

    names: list[str]
    layers: list[int]
    results: dict[str, dict[str, EvalResult]]  # target -> config -> result
    gains: dict[str, dict[int, float]]  # "donor->target" -> layer -> normalised gain

    def gain_grids(self) -> dict[str, list[list[float]]]:
        """Per layer, normalised gain with donors as rows and targets as columns (NaN on the diagonal)."""
        return {
            f"layer {layer}": [
                [self.gains[f"{d}->{t}"][layer] if d != t else float("nan") for t in self.names] for d in self.names
            ]
            for layer in self.layers
        }

    def pass_table(self) -> dict[str, dict[str, float]]:
        """target -> configuration -> pass@1."""
        return {t: {k: r.pass_at_1 for k, r in res.items()} for t, res in self.results.items()}

    def mean_gains(self) -> dict[str, float]:
        """Normalised gain of every direction, averaged over layers."""
        return {pair: float(np.nanmean(list(g.values()))) for pair, g in self.gains.items()}

    def gain_errors(self, n_boot: int = 500, seed: int = 0) -> dict[str, float]:
        """Bootstrap standard error of every direction's layer-mean normalised gain (the target's
        problems resampled, the same draw for its base, own and transferred evaluations)."""
        from steerlib.stats import bootstrap

        out = {}
        for pair in self.gains:
            donor, target = pair.split("->")
            res, layers = self.results[target], [l for l in self.layers if f"{donor}/{l}" in self.results[target]]
            per = {"base": res["base"].per_problem, **{f"own/{l}": res[f"own/{l}"].per_problem for l in layers},
                   **{f"x/{l}": res[f"{donor}/{l}"].per_problem for l in layers}}
            out[pair] = bootstrap(per, functools.partial(_mean_gain, layers=layers), n_boot=n_boot, seed=seed).se
        return out

    def family_summary(self, parent: dict[str, str | None]) -> dict[str, Any]:
        """Mean gain parent -> child, child -> parent, related (both) and unrelated directions, each with
        a standard error from the directions' bootstrap errors (treated as independent)."""
        means, se = self.mean_gains(), self.gain_errors()
        down = [p for p in means if parent.get(p.split("->")[1]) == p.split("->")[0]]  # donor is the parent
        up = [p for p in means if parent.get(p.split("->")[0]) == p.split("->")[1]]  # donor is the child
        other = [p for p in means if p not in down + up]
        mean = lambda ps: float(np.mean([means[p] for p in ps])) if ps else None  # noqa: E731
        group_se = lambda ps: float(np.sqrt(sum(se[p] ** 2 for p in ps)) / len(ps)) if ps else None  # noqa: E731
        return {
            "related_mean_gain": mean(down + up),
            "parent_to_child_mean_gain": mean(down),
            "child_to_parent_mean_gain": mean(up),
            "unrelated_mean_gain": mean(other),
            "related_mean_gain_se": group_se(down + up),
            "parent_to_child_mean_gain_se": group_se(down),
            "child_to_parent_mean_gain_se": group_se(up),
            "unrelated_mean_gain_se": group_se(other),
            "normalized_gain_se": se,
            "n_related": len(down + up),
            "n_unrelated": len(other),
        }


    def family_estimates(self, parent: dict[str, str | None]) -> dict[str, Estimate]:
        """:meth:`family_summary`'s two directions as estimates: ``parent_to_child`` and ``child_to_parent``
        (NaN where the study has no such direction)."""
        fs = self.family_summary(parent)
        nan = float("nan")
        return {k: Estimate(nan if fs[f"{k}_mean_gain"] is None else fs[f"{k}_mean_gain"],
                            nan if fs[f"{k}_mean_gain_se"] is None else fs[f"{k}_mean_gain_se"])
                for k in ("parent_to_child", "child_to_parent")}


def _mean_gain(m: dict[str, float], layers: Sequence[int]) -> float:
    gains = [g for g in (gain_share(m[f"x/{l}"], m["base"], m[f"own/{l}"]) for l in layers) if np.isfinite(g)]
    return float(np.mean(gains)) if gains else float("nan")


def transfer_study(
    orgs: dict[str, Any], presets: dict[str, Any], own: dict[str, dict[int, SteeringVector]]
) -> TransferStudy:
    """For every target model: base, its own vector per layer and every other model's vector per
    layer, on the target's held-out problems in one routed batch.

    Example:
        >>> study = transfer_study(orgs, presets, own)     # doctest: +SKIP
        >>> study.mean_gains()["main->tuned"]              # doctest: +SKIP
    """
    from steerlib.data import split_prompts

    names = list(own)
    results, gains = {}, {}
    for target in names:
        p = presets[target]
        prompts, answers = split_prompts(p, orgs[target].tokenizer, "test", p.eval_problems)
        out = transfer_evaluation(
            orgs[target].model,
            orgs[target].tokenizer,
            prompts,
            answers,
            own[target],
            {d: own[d] for d in names if d != target},
            max_new_tokens=p.max_new_tokens,
        )
        results[target] = out["results"]
        gains.update({f"{donor}->{target}": g for donor, g in out["normalized_gain"].items()})
    return TransferStudy(names, sorted(next(iter(own.values()))), results, gains)
