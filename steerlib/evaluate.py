"""Evaluation: pass@1 by sampling (default τ = 1.0, top_p = 1.0), under any steering configuration.

``evaluate`` samples ``n`` completions per problem, scores each with the Math-Verify reward and
reports pass@1 (= AVG@n, the mean correctness over all samples, as the paper reports for its small
benchmarks), a standard error clustered by problem, the share of each first generated token and the
mean completion length. ``greedy=True`` decodes one completion per problem at τ = 0. Sampling uses the
shared-prefill rollout loop of :mod:`steerlib.rollout` (the one the trainer uses). Steering vectors
are applied through :func:`steerlib.steering.steer`; ``routes`` gives each problem its own routing
group, so one batched call evaluates many layers' vectors at once.

Example:
    >>> res = evaluate(model, tok, prompts, answers, n=4, vectors=vecs)  # doctest: +SKIP
    >>> res.pass_at_1, res.stderr, res.first_token_share(" Step")        # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlib.rewards import MathVerifier, default_verifier
from steerlib.steering import Positions, SteeringVector

__all__ = [
    "Completion",
    "EvalResult",
    "generate",
    "evaluate",
    "evaluate_routed",
    "summarise",
    "results_table",
    "forced_accuracy",
    "summary_table",
    "average_benchmarks",
    "per_benchmark",
]


@dataclass
class Completion:
    """One sampled completion."""

    prompt_index: int
    text: str
    first_token: str
    n_tokens: int
    reward: float | None = None
    token_ids: list[int] = field(default_factory=list, repr=False)  # generated ids (prefix included, no EOS)
    finished: bool = True  # it emitted a stop token within the budget (else it was cut, and scores as it reads)


@dataclass
class EvalResult:
    """pass@1 and friends for one benchmark under one configuration."""

    pass_at_1: float
    stderr: float
    n_problems: int
    samples_per_problem: int
    per_problem: list[float]
    first_tokens: dict[str, int]
    mean_length: float
    completions: list[Completion] = field(default_factory=list, repr=False)
    by_benchmark: dict[str, EvalResult] = field(default_factory=dict, repr=False)  # set on a benchmark Average

    @property
    def cut_rate(self) -> float:
        """Share of completions cut at the token budget before their stop token (NaN without completions)."""
        return sum(not c.finished for c in self.completions) / len(self.completions) if self.completions else math.nan

    def first_token_share(self, token: str) -> float:
        """Share of completions whose first generated token is ``token``."""
        total = sum(self.first_tokens.values())
        return self.first_tokens.get(token, 0) / total if total else 0.0

    def first_token_per_problem(self, token: str) -> list[float]:
        """Per problem, the share of its samples whose first generated token is ``token`` (an Average's
        problems benchmark by benchmark, in order): the unit a share's error is clustered by, since the
        samples of one prompt are not independent draws.

        Example:
            >>> r = summarise([Completion(0, "", " To", 1), Completion(0, "", " Let", 1),
            ...                Completion(1, "", " To", 1), Completion(1, "", " To", 1)], 2, 2)
            >>> r.first_token_per_problem(" To")
            [0.5, 1.0]
        """
        parts = list(self.by_benchmark.values()) or [self]
        out: list[float] = []
        for part in parts:
            hits: dict[int, list[bool]] = {}
            for c in part.completions:
                hits.setdefault(c.prompt_index, []).append(c.first_token == token)
            out += [sum(h) / len(h) for _, h in sorted(hits.items())]
        return out

    def first_token_share_se(self, token: str) -> float:
        """Standard error of :meth:`first_token_share`, clustered by problem (the spread of the
        per-problem shares / sqrt(problems)); NaN with fewer than two problems.

        Example:
            >>> r = summarise([Completion(0, "", " To", 1), Completion(1, "", " Let", 1)], 2, 1)
            >>> round(r.first_token_share_se(" To"), 3)  # sd of [1, 0] / sqrt(2)
            0.5
        """
        from steerlib.stats import mean_estimate

        return mean_estimate(self.first_token_per_problem(token)).se

    def top_first_tokens(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most frequent first tokens with their shares."""
        total = sum(self.first_tokens.values()) or 1
        return [(t, c / total) for t, c in Counter(self.first_tokens).most_common(k)]

    def conditional_accuracy(self, token: str) -> float:
        """Accuracy among completions whose first token is ``token`` (NaN if none)."""
        hits = [c.reward for c in self.completions if c.first_token == token]
        return float(sum(hits) / len(hits)) if hits else float("nan")


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    greedy: bool = False,
    prefix: str = "",
    batch_size: int = 256,
    vectors: Sequence[SteeringVector] | None = None,
    routes: Sequence[int] | None = None,
    positions: Positions = "all",
    seed: int | None = 0,
    progress: bool = False,
    stop_ids: Sequence[int] | None = None,
    shared_prefix: bool = False,
) -> list[Completion]:
    """Sample ``n`` completions per prompt (stop at EOS) with the shared-prefill rollout loop.

    Each prompt is prefilled once and its ``n`` samples share that KV cache; finished rows leave the
    batch (:func:`steerlib.rollout.sample_rollouts`).

    Args:
        prefix: text forced after each prompt (tokenised on its own and appended, as the paper's
            first-token prefix test appends one token); it is part of the returned completion.
        batch_size: completions per batch (prompts per batch = ``batch_size // n``).
        vectors, routes, positions: steering applied while sampling (``routes``: one group per prompt).
        seed: seeds the sampling RNG (``None``: a random seed).
        stop_ids: tokens that end a completion (default: the tokenizer's EOS; see
            :func:`steerlib.data.stop_token_ids`).
        shared_prefix: the prompts' common leading tokens (a system prompt) prefilled once per batch and
            routing group (:func:`steerlib.rollout.sample_rollouts`).
    """
    from steerlib.rollout import sample_rollouts

    device = next(model.parameters()).device
    k = 1 if greedy else n
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
    prompt_ids = _encode(tokenizer, prompts)
    prefix_ids = _encode(tokenizer, [prefix])[0] if prefix else []
    per_batch = max(1, batch_size // k)
    stops = list(stop_ids) if stop_ids else [tokenizer.eos_token_id]
    out: list[Completion] = []
    for lo in tqdm(range(0, len(prompts), per_batch), desc="sampling", disable=not progress, leave=False):
        idx = list(range(lo, min(len(prompts), lo + per_batch)))
        ro = sample_rollouts(
            model,
            [prompt_ids[i] + prefix_ids for i in idx],
            k,
            eos_id=stops,
            pad_id=tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens,
            temperature=0.0 if greedy else temperature,
            top_p=top_p,
            vectors=vectors or None,
            routes=[routes[i] for i in idx] if (vectors and routes is not None) else None,
            positions=positions,
            generator=gen,
            shared_prefix=shared_prefix,
        )
        for row, (toks, m) in enumerate(zip(ro.completion_ids.tolist(), ro.completion_mask.tolist())):
            toks = prefix_ids + toks[: sum(m)]
            body = toks[:-1] if toks and toks[-1] in stops and len(toks) > len(prefix_ids) else toks
            first = tokenizer.decode(toks[:1]) if toks else ""
            out.append(
                Completion(
                    idx[row // k], tokenizer.decode(body, skip_special_tokens=True), first, len(toks), token_ids=body,
                    finished=bool(ro.finished[row]),
                )
            )
    return out


def summarise(completions: list[Completion], n_problems: int, per_problem_n: int) -> EvalResult:
    """An :class:`EvalResult` from scored completions (``prompt_index`` in ``0..n_problems-1``)."""
    sums = [0.0] * n_problems
    counts = [0] * n_problems
    for c in completions:
        sums[c.prompt_index] += float(c.reward or 0.0)
        counts[c.prompt_index] += 1
    per = [s / k for s, k in zip(sums, counts) if k]
    mean = sum(per) / len(per) if per else float("nan")
    var = sum((p - mean) ** 2 for p in per) / (len(per) - 1) if len(per) > 1 else float("nan")
    return EvalResult(
        pass_at_1=mean,
        stderr=math.sqrt(var / len(per)) if len(per) > 1 else float("nan"),
        n_problems=len(per),
        samples_per_problem=per_problem_n,
        per_problem=per,
        first_tokens=dict(Counter(c.first_token for c in completions)),
        mean_length=sum(c.n_tokens for c in completions) / max(1, len(completions)),
        completions=completions,
    )


def average_benchmarks(results: dict[str, EvalResult]) -> EvalResult:
    """The paper's Average over benchmarks: the mean of their pass@1 (each AVG@n over its own samples),
    with the standard error of that mean (benchmarks are independent); the per-benchmark results stay
    in ``by_benchmark``.

    Example:
        >>> a = summarise([Completion(0, "", "x", 1, 1.0), Completion(1, "", "x", 1, 0.0)], 2, 1)
        >>> b = summarise([Completion(0, "", "y", 3, 1.0)], 1, 1)
        >>> avg = average_benchmarks({"a": a, "b": b})
        >>> avg.pass_at_1, sorted(avg.by_benchmark)
        (0.75, ['a', 'b'])
    """
    parts = list(results.values())
    n = len(parts)
    comps = [c for r in parts for c in r.completions]
    return EvalResult(
        pass_at_1=sum(r.pass_at_1 for r in parts) / n,
        stderr=math.sqrt(sum(r.stderr**2 for r in parts)) / n,
        n_problems=sum(r.n_problems for r in parts),
        samples_per_problem=max(r.samples_per_problem for r in parts),
        per_problem=[x for r in parts for x in r.per_problem],
        first_tokens=dict(sum((Counter(r.first_tokens) for r in parts), Counter())),
        mean_length=sum(c.n_tokens for c in comps) / max(1, len(comps)),
        completions=comps,
        by_benchmark=dict(results),
    )


def per_benchmark(results: dict[str, EvalResult]) -> dict[str, dict[str, dict[str, float]]]:
    """configuration -> benchmark -> pass@1, standard error and samples per problem, for results that
    are a benchmark Average (empty for the organism's single test split).

    Example:
        >>> per_benchmark({"base": summarise([], 0, 1)})
        {}
    """
    return {name: {b: {"pass_at_1": x.pass_at_1, "stderr": x.stderr, "samples_per_problem": x.samples_per_problem}
                   for b, x in r.by_benchmark.items()} for name, r in results.items() if r.by_benchmark}


def benchmark_table(results: dict[str, EvalResult]) -> Any:
    """Per-benchmark pass@1 (± standard error) of every configuration, benchmarks as rows plus their
    Average, with the samples drawn per problem (AVG@n); ``None`` for results that are not a benchmark
    Average (the organism's single test split), so a chapter shows it only where it exists.

    Example:
        >>> benchmark_table({"base": summarise([], 0, 1)}) is None
        True
    """
    import pandas as pd

    rows = {name: r.by_benchmark for name, r in results.items() if r.by_benchmark}
    if not rows:
        return None
    first = next(iter(rows.values()))
    table = pd.DataFrame({name: {b: f"{x.pass_at_1:.3f} ± {x.stderr:.3f}" for b, x in by.items()}
                          for name, by in rows.items()})
    table.loc["Average"] = [f"{results[name].pass_at_1:.3f} ± {results[name].stderr:.3f}" for name in rows]
    table.insert(0, "samples/problem", [f"AVG@{first[b].samples_per_problem}" for b in first] + ["–"])
    return table.rename_axis("benchmark")


def evaluate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    n: int = 1,
    greedy: bool = False,
    verifier: MathVerifier | None = None,
    cut_is_wrong: bool = False,
    **gen_kwargs: Any,
) -> EvalResult:
    """pass@1 over ``n`` samples per problem (AVG@n), scored with Math-Verify (``cut_is_wrong``: a
    completion cut at the token budget scores 0 whatever it reads).

    Extra keyword arguments go to :func:`generate` (temperature, prefix, vectors, routes, ...).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    verifier = verifier or default_verifier()
    comps = generate(model, tokenizer, prompts, n=n, greedy=greedy, **gen_kwargs)
    for c in comps:
        c.reward = 0.0 if cut_is_wrong and not c.finished else verifier.score(c.text, str(answers[c.prompt_index]))
    return summarise(comps, len(prompts), 1 if greedy else n)


def evaluate_routed(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    configs: dict[str, Sequence[SteeringVector]],
    **kwargs: Any,
) -> dict[str, EvalResult]:
    """Evaluate several steering configurations on the same problems in one routed batch.

    Each configuration (a name and the vectors applied together; ``[]`` = the unsteered model) gets
    its own routing group, so all of them share every forward pass. The given vectors are not
    modified (routed copies are made).

    Example:
        >>> res = evaluate_routed(model, tok, prompts, answers,                 # doctest: +SKIP
        ...                       {"base": [], "s5": [v5], "s4+s5": [v4, v5]}, max_new_tokens=64)
        >>> res["s5"].pass_at_1                                                  # doctest: +SKIP
    """
    import dataclasses

    names = list(configs)
    vectors = [dataclasses.replace(v, route=r) for r, name in enumerate(names) for v in configs[name]]
    routes = [r if configs[name] else -1 for r, name in enumerate(names) for _ in prompts]
    res = evaluate(
        model,
        tokenizer,
        [p for _ in names for p in prompts],
        [a for _ in names for a in answers],
        vectors=vectors or None,
        routes=routes if vectors else None,
        **kwargs,
    )
    n, out = len(prompts), {}
    for r, name in enumerate(names):
        comps = [c for c in res.completions if r * n <= c.prompt_index < (r + 1) * n]
        for c in comps:
            c.prompt_index -= r * n
        out[name] = summarise(comps, n, res.samples_per_problem)
    return out


def results_table(results: dict[str, EvalResult]) -> Any:
    """A per-benchmark ``pandas.DataFrame`` (pass@1, stderr, problems, samples) plus their mean."""
    import pandas as pd

    rows = [
        {
            "benchmark": name,
            "pass@1": r.pass_at_1,
            "stderr": r.stderr,
            "problems": r.n_problems,
            "samples/problem": r.samples_per_problem,
        }
        for name, r in results.items()
    ]
    df = pd.DataFrame(rows).set_index("benchmark")
    if len(df) > 1:
        df.loc["Average"] = [df["pass@1"].mean(), float("nan"), df["problems"].sum(), float("nan")]
    return df


def summary_table(
    results: dict[str, EvalResult],
    *,
    gain_from: tuple[float, float] | None = None,
    first_tokens: int = 0,
    extra: dict[str, dict[str, Any]] | None = None,
    digits: int = 3,
) -> Any:
    """One row per configuration: pass@1 and its standard error, rounded, for a chapter's table.

    Args:
        gain_from: ``(base, full)``: add the gain share ``(acc - base) / (full - base)``.
        first_tokens: add the ``k`` most frequent first tokens with their shares.
        extra: more columns, ``{column: {configuration: value}}``.

    Example:
        >>> r = summarise([], 0, 1)
        >>> list(summary_table({"base": r}).columns)
        ['pass@1', 'stderr']
    """
    import pandas as pd

    cols: dict[str, dict[str, Any]] = {"pass@1": {k: r.pass_at_1 for k, r in results.items()},
                                       "stderr": {k: r.stderr for k, r in results.items()}}
    if gain_from is not None:
        base, full = gain_from
        cols["gain share"] = {k: (r.pass_at_1 - base) / (full - base) if full != base else float("nan")
                              for k, r in results.items()}
    if first_tokens:
        cols["top first tokens"] = {k: ", ".join(f"{t!r} {s:.2f}" for t, s in r.top_first_tokens(first_tokens))
                                    for k, r in results.items()}
    cols.update(extra or {})
    return pd.DataFrame(cols, index=list(results)).round(digits)


def forced_accuracy(model: Any, tokenizer: Any, n: int = 64, seed: int = 0, split: str = "validation") -> float:
    """Greedy accuracy of the organism with the worked opener forced (a pretraining probe)."""
    from steerlib.world import WORKED_OPENER, sample_problems

    probs = sample_problems(n, split, seed)  # type: ignore[arg-type]
    res = evaluate(
        model,
        tokenizer,
        [p.prompt for p in probs],
        [str(p.answer) for p in probs],
        greedy=True,
        prefix=WORKED_OPENER,
        max_new_tokens=60,
    )
    return res.pass_at_1
