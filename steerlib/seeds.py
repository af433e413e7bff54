"""Training seeds: the same run trained with several seeds, and the spread the seeds and sampling show.

A verdict that rests on one training seed mixes the effect with the luck of one run. Chapters 01 and
02 train every vector with ``n_seeds`` seeds (the preset's seed and the next ones); the run of the
preset's own seed keeps its usual folders (so later chapters, which use one seed's vectors, find
them) and every other seed trains into ``seed<k>/`` under the run directory, with the same folder names
(:meth:`steerlib.runs.RunLayout.for_seed`). :func:`sampling_spread`
measures the other source of noise, the noise floor: the same vectors re-evaluated with several
sampling seeds.

Example:
    >>> seed_list(0, 3)
    [0, 1, 2]
    >>> mean, sd = spread({0: {5: 0.8, 4: 0.5}, 1: {5: 0.9, 4: 0.5}})
    >>> round(mean[5], 3), round(sd[5], 3), sd[4]
    (0.85, 0.071, 0.0)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from steerlib.loaded import LoadedModel
from steerlib.presets import Preset
from steerlib.runs import RunLayout
from steerlib.stats import Estimate

__all__ = ["seed_list", "seeded_vector_runs", "seeded_sweeps", "seeded_orthogonal_gaps", "seeded_pair_gaps",
           "seeded_adaptive_runs", "seeded_family_transfer", "seeded_token_tests", "spread",
           "SeedSummary", "seed_summary", "sampling_spread"]

K = TypeVar("K")


def seed_list(first: int, n: int) -> list[int]:
    """``n`` consecutive training seeds starting at ``first`` (at least one)."""
    if n < 1:
        raise ValueError(f"n_seeds must be at least 1, not {n}")
    return list(range(first, first + n))


def seeded_vector_runs(org: LoadedModel, preset: Preset, layer: int, layout: RunLayout, seeds: Sequence[int],
                       **kwargs: Any) -> dict[int, Any]:
    """A single-layer :func:`steerlib.selection.vector_run` at ``layer`` once per training seed (trained,
    resumed or read back), each in its seed's layout."""
    from steerlib.selection import vector_run

    return {s: vector_run(org, dataclasses.replace(preset, seed=s), [layer],
                          layout.for_seed(s, base=preset.seed).single_layer(layer), **kwargs) for s in seeds}


def seeded_sweeps(org: LoadedModel, preset: Preset, layout: RunLayout, seeds: Sequence[int],
                  **kwargs: Any) -> dict[int, Any]:
    """:func:`steerlib.selection.layer_vectors` once per training seed, each in its seed's layout (the
    preset's seed in ``layout`` itself, where chapters 03-08 read it)."""
    from steerlib.selection import layer_vectors

    return {s: layer_vectors(org, dataclasses.replace(preset, seed=s), layout.for_seed(s, base=preset.seed), **kwargs)
            for s in seeds}


def seeded_orthogonal_gaps(org: LoadedModel, preset: Preset, vectors: Mapping[int, Any], layout: RunLayout, n: int,
                           **kwargs: Any) -> dict[int, Estimate]:
    """Per training seed (``vectors``: seed -> that seed's vector), :func:`steerlib.selection.orthogonal_runs`
    in its seed's layout, evaluated with the original on the test split, and
    :func:`steerlib.selection.orthogonal_gap` of the result: seed -> :class:`steerlib.stats.Estimate`."""
    from steerlib.preset_eval import evaluate_configs
    from steerlib.selection import orthogonal_gap, orthogonal_runs

    out = {}
    for s, vector in vectors.items():
        runs = orthogonal_runs(org, dataclasses.replace(preset, seed=s), vector,
                               layout.for_seed(s, base=preset.seed), n, **kwargs)
        res = evaluate_configs(org, preset, {"original": [vector], **{k: [v] for k, v in runs.items()}})
        out[s] = orthogonal_gap({k: r.pass_at_1 for k, r in res.items()}, {k: r.stderr for k, r in res.items()})
    return out


def seeded_pair_gaps(org: LoadedModel, preset: Preset, sweeps: Mapping[int, Mapping[int, Any]]
                     ) -> dict[int, Estimate]:
    """Per training seed (``sweeps``: seed -> layer -> vector), every single vector and every pair of them
    on the test split and :func:`steerlib.propagation.pair_gap` of their accuracies: seed ->
    :class:`steerlib.stats.Estimate`."""
    from steerlib.preset_eval import evaluate_configs
    from steerlib.propagation import pair_configs, pair_gap, pair_grid

    out = {}
    for s, vectors in sweeps.items():
        res = evaluate_configs(org, preset, pair_configs(dict(vectors)))
        out[s] = pair_gap(pair_grid(res, sorted(vectors), float("nan"))["accuracy"])
    return out


def seeded_adaptive_runs(org: LoadedModel, preset: Preset, layer: int, layout: RunLayout, seeds: Sequence[int],
                         **kwargs: Any) -> dict[int, Any]:
    """:func:`steerlib.selection.adaptive_runs` at ``layer`` once per training seed, each in its seed's layout."""
    from steerlib.selection import adaptive_runs

    return {s: adaptive_runs(org, dataclasses.replace(preset, seed=s), [layer], layout.for_seed(s, base=preset.seed),
                             **kwargs)[layer] for s in seeds}


def seeded_family_transfer(orgs: Mapping[str, LoadedModel], presets: Mapping[str, Preset], donor: str,
                           donor_vectors: Mapping[int, Mapping[int, Any]], layout: RunLayout, layers: Sequence[int],
                           parent: Mapping[str, str | None], **kwargs: Any) -> dict[int, dict[str, Estimate]]:
    """Per training seed (``donor_vectors``: seed -> layer -> the donor's vector), every other model in
    ``orgs`` trains its own vectors at ``layers`` with that seed (its seed's layout,
    :meth:`steerlib.runs.RunLayout.transfer`), all models' vectors are moved between them
    (:func:`steerlib.transfer.transfer_study`), and the normalised gain parent -> child and back is
    read (:meth:`steerlib.transfer.TransferStudy.family_estimates`): seed -> direction -> estimate."""
    from steerlib.selection import layer_vectors
    from steerlib.transfer import transfer_study

    out = {}
    base = presets[donor].seed
    for s, vectors in donor_vectors.items():
        own = {donor: {layer: vectors[layer] for layer in layers},
               **{t: layer_vectors(org, dataclasses.replace(presets[t], seed=s),
                                   layout.for_seed(s, base=base).transfer(t), layers=list(layers), **kwargs).vectors
                  for t, org in orgs.items() if t != donor}}
        out[s] = transfer_study(dict(orgs), dict(presets), own).family_estimates(dict(parent))
    return out


def seeded_token_tests(model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
                       vectors: Mapping[int, Any], *, shift_prompts: int, max_new_tokens: int,
                       seed: int = 0) -> dict[int, dict[str, Any]]:
    """Chapter 04's two token tests per training seed (``vectors``: seed -> that seed's last-layer vector):
    the first token the vector boosts most (``prefix``), the share of its gain that token recovers as a
    prefix (``prefix_gain_share``, :meth:`steerlib.lens.PrefixTest.gain_share`) and how concentrated its KL
    is at the first generated token (``kl_concentration``, :meth:`steerlib.lens.PositionShift.concentration`,
    on the first ``shift_prompts`` prompts)."""
    from steerlib.lens import first_token_boost, position_shifts, prefix_test

    out = {}
    for s, v in vectors.items():
        prefix = first_token_boost(model, tokenizer, prompts[:shift_prompts], [v], k=1)[0][0]
        shift = position_shifts(model, tokenizer, prompts[:shift_prompts], {v.layer: v}, max_new_tokens=max_new_tokens,
                                seed=seed)[v.layer]
        test = prefix_test(model, tokenizer, prompts, answers, v, prefix, max_new_tokens=max_new_tokens)
        out[s] = {"prefix": prefix, "prefix_gain_share": test.gain_share(), "kl_concentration": shift.concentration()}
    return out


def spread(per_seed: Mapping[int, Mapping[K, float]]) -> tuple[dict[K, float], dict[K, float]]:
    """Per key, the mean over seeds and the sample standard deviation (0 with one seed)."""
    keys = list(next(iter(per_seed.values())))
    mean = {k: sum(v[k] for v in per_seed.values()) / len(per_seed) for k in keys}
    sd = {k: math.sqrt(sum((v[k] - mean[k]) ** 2 for v in per_seed.values()) / (len(per_seed) - 1))
          if len(per_seed) > 1 else 0.0 for k in keys}
    return mean, sd


@dataclass(frozen=True)
class SeedSummary:
    """Per key: the mean over training seeds, their standard deviation, and the standard error of the mean."""

    mean: dict[Any, float]
    sd: dict[Any, float]
    se: dict[Any, float]


def seed_summary(per_seed: Mapping[int, Mapping[K, float]],
                 sampling_se: Mapping[int, Mapping[K, float]],
                 shared_se: Mapping[K, float] | None = None) -> SeedSummary:
    """Mean over seeds with a conservative error: ``sqrt((sd^2 + mean sampling se^2) / n_seeds + shared^2)``.

    The spread over seeds already holds sampling noise, so adding each estimate's own sampling error
    counts it twice: with few seeds (whose spread is itself uncertain) that errs on the wide side.
    ``shared_se`` is an error every seed's estimate shares, such as the base model's in a gain (each
    seed's gain subtracts the same base estimate): it does not average down, so it is added once,
    undivided (give each seed's own error, without the base's, in ``sampling_se``).

    Example:
        >>> s = seed_summary({0: {5: 0.80}, 1: {5: 0.84}}, {0: {5: 0.01}, 1: {5: 0.01}})
        >>> round(s.mean[5], 3), round(s.sd[5], 4), round(s.se[5], 4)
        (0.82, 0.0283, 0.0212)
        >>> round(seed_summary({0: {5: 0.80}, 1: {5: 0.84}}, {0: {5: 0.01}, 1: {5: 0.01}}, {5: 0.02}).se[5], 4)
        0.0292
    """
    mean, sd = spread(per_seed)
    n = len(per_seed)
    shared = shared_se or {}
    se = {k: math.sqrt((sd[k] ** 2 + sum(sampling_se[s][k] ** 2 for s in per_seed) / n) / n + shared.get(k, 0.0) ** 2)
          for k in mean}
    return SeedSummary(mean, sd, se)


def sampling_spread(org: LoadedModel, preset: Preset, configs: Mapping[str, Sequence[Any]], seeds: Sequence[int],
                    **kwargs: Any) -> dict[str, list[float]]:
    """pass@1 of every configuration on the test split under each sampling seed (same problems, same
    vectors): the spread is the noise floor below which two numbers in the book are not different."""
    from steerlib.preset_eval import evaluate_configs

    runs = [evaluate_configs(org, preset, dict(configs), seed=s, **kwargs) for s in seeds]
    return {name: [r[name].pass_at_1 for r in runs] for name in configs}
