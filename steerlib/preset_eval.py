"""Evaluation on a preset's splits: the organism's test split, or the six benchmarks with AVG@n.

:func:`evaluate_configs` evaluates steering configurations (``[]``: the unsteered model) on one split
of a preset in one routed batch; for a hub preset's test split every benchmark is evaluated on its own
with the authors' sample count, and each configuration's result is the benchmarks' Average with the
per-benchmark results in ``by_benchmark``. :func:`evaluate_weights` and :func:`evaluate_runs` do the
same for trained runs (weight runs with their chosen snapshot loaded, the model restored afterwards).

Example:
    >>> res = evaluate_configs(org, preset, {"base": [], "s5": [v5]})   # doctest: +SKIP
    >>> res["s5"].pass_at_1, sorted(res["s5"].by_benchmark)             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from steerlib.loaded import LoadedModel
from steerlib.data import benchmark_sets, render_prompt, split_prompts, stop_token_ids
from steerlib.evaluate import EvalResult, average_benchmarks, evaluate_routed
from steerlib.presets import Preset
from steerlib.steering import SteeringVector

__all__ = ["evaluate_configs", "evaluate_weights", "evaluate_runs", "evaluate_patched"]


def evaluate_configs(
    org: LoadedModel,
    preset: Preset,
    configs: dict[str, Sequence[SteeringVector]],
    *,
    split: str = "test",
    n_problems: int | None = None,
    prefix: str = "",
    progress: bool = False,
    seed: int = 0,
) -> dict[str, EvalResult]:
    """Several steering configurations (``[]``: the unsteered model) on one split, one routed batch
    (``seed`` seeds the sampling).

    For a hub preset's test split every benchmark is evaluated on its own with its sample count
    (AVG@n) and each configuration's result is the benchmarks' Average, with the per-benchmark
    results in ``by_benchmark``.
    """
    kw = dict(max_new_tokens=preset.max_new_tokens, prefix=prefix, progress=progress,
              stop_ids=stop_token_ids(org.tokenizer, preset.template), seed=seed, shared_prefix=preset.shared_prefix,
              cut_is_wrong=preset.cut_is_wrong)
    if split == "test" and preset.train_source != "organism":
        per: dict[str, dict[str, EvalResult]] = {name: {} for name in configs}
        for bench, probs in benchmark_sets(preset, n_problems).items():
            prompts = [render_prompt(p, preset.template, org.tokenizer) for p in probs]
            res = evaluate_routed(org.model, org.tokenizer, prompts, [p.answer for p in probs], configs,
                                  n=preset.eval_benchmarks[bench], **kw)
            for name, r in res.items():
                per[name][bench] = r
        return {name: average_benchmarks(r) for name, r in per.items()}
    prompts, answers = split_prompts(preset, org.tokenizer, split, n_problems or preset.eval_problems)
    return evaluate_routed(org.model, org.tokenizer, prompts, answers, configs, **kw)


def evaluate_weights(
    org: LoadedModel,
    preset: Preset,
    run: Any,
    *,
    split: str = "test",
    n_problems: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """pass@1 of a weight run's chosen snapshot on a split (the model is restored afterwards)."""
    from types import SimpleNamespace

    with run.loaded() as model:
        org_here = SimpleNamespace(model=model, tokenizer=org.tokenizer)
        return evaluate_configs(org_here, preset, {"run": []}, split=split, n_problems=n_problems,
                                progress=progress)["run"]


def evaluate_runs(
    org: LoadedModel,
    preset: Preset,
    runs: dict[str, Any],
    configs: dict[str, Sequence[SteeringVector]] | None = None,
    **kwargs: Any,
) -> dict[str, EvalResult]:
    """Test pass@1 of ``configs`` and of every run: vector runs join the configurations' routed batch,
    weight runs are evaluated one by one with their chosen snapshot loaded."""
    vec = {name: r.vectors for name, r in runs.items() if r.train.kind.startswith("vectors")}
    out = evaluate_configs(org, preset, {**(configs or {}), **vec}, **kwargs)
    for name, r in runs.items():
        if name not in vec:
            out[name] = evaluate_weights(org, preset, r, n_problems=kwargs.get("n_problems"))
    return out


def evaluate_patched(org: LoadedModel, preset: Preset, vector: Any, layer: int, specs: dict[str, dict[str, Any]],
                     **kwargs: Any) -> dict[str, EvalResult]:
    """pass@1 with ``vector`` given to ``layer``'s attention by each head patch of ``specs`` (keyword
    arguments of :func:`steerlib.headpatch.patch_attention`, e.g. from
    :func:`steerlib.ablation.head_patch_specs`), one patch after another, with the preset's sampling
    settings on the same problems as :func:`evaluate_configs` (``kwargs`` go to it).

    Example:
        >>> evaluate_patched(org, preset, pen.vector, 23, {"v": {"projections": {"v": None}}})  # doctest: +SKIP
    """
    from steerlib.headpatch import patch_attention

    out = {}
    for name, spec in specs.items():
        with patch_attention(org.model, vector, layer, **spec):
            out[name] = evaluate_configs(org, preset, {name: []}, **kwargs)[name]
    return out


#: The routes :func:`route_shares` measures, in its order.
ROUTES = ("Skip-Attn", "Skip-Layer", "MLP-only", "v-only, all groups")


def route_shares(org: LoadedModel, preset: Preset, vector: SteeringVector, block: int) -> dict[str, Any]:
    """Which route through the next block (``block``) carries a vector's gain: the share of its gain
    (in place against the base model, on the test split) kept by each of :data:`ROUTES` (Skip-Attn,
    Skip-Layer and MLP-only from :mod:`steerlib.ablation`, and the vector fed to the value projections of
    every KV group), each a :class:`~steerlib.stats.Estimate` with its bootstrap error over problems
    (:func:`route_estimates`). One routed batch for the moved vectors, one patched pass for the value
    projections.

    Example:
        >>> shares = route_shares(org, preset, vecs[4], 5)                  # doctest: +SKIP
        >>> round(shares["Skip-Attn"].estimate, 2)                           # doctest: +SKIP
        1.05
    """
    from steerlib.ablation import head_patch_specs, mlp_only, skip_attn, skip_layer

    ev = evaluate_configs(org, preset, {"base": [], "in place": [vector], "Skip-Attn": [skip_attn(vector)],
                                        "Skip-Layer": [skip_layer(vector)], "MLP-only": [mlp_only(vector)]})
    ev.update(evaluate_patched(org, preset, vector.vector, block,
                               {ROUTES[3]: head_patch_specs(org.model)[ROUTES[3]]}))
    return route_estimates(ev)


def route_estimates(evals: Mapping[str, EvalResult]) -> dict[str, Any]:
    """:func:`route_shares` from evaluations already made on the same problems: ``evals`` holds
    ``base``, ``in place`` and every one of :data:`ROUTES`."""
    from steerlib.stats import share_estimate

    return {name: share_estimate(evals[name], evals["base"], evals["in place"]) for name in ROUTES}
