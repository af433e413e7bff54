"""How a vector injected at layer ``i`` shows up at later layers, and how vectors combine.

Definitions follow the authors' persistence script (the paper's Section 5, Figures 2 and 13):

- For each prompt, one completion is sampled with only ``s_i`` active; prompt + completion is then
  teacher-forced with and without ``s_i`` and every decoder layer's output recorded:
  ``Δ_j(t) = h_j(t; s_i) − h_j(t; base)`` at every real token ``t`` (prompt and completion).
- Diff-Vector CosSim(i, j) = cos(Δ_j(t), s_j), ``s_j`` the vector trained alone at ``j``.
- Diff-Diff CosSim(i, j) = cos(Δ_j(t), mean over the sequence's tokens of Δ_j).
- Layer CosSim(i, j) = cos(mean over all tokens and prompts of Δ_j, s_j).

Per-token cosines are averaged over the tokens of a sequence, then over sequences. For ``j < i`` the
shift is exactly zero and the entries are NaN. Pairs: two vectors trained in isolation applied
together; normalised pair accuracy = (acc_ij − max(acc_i, acc_j)) / (acc_all − max(acc_i, acc_j)).

Example:
    >>> p = persistence(model, tok, prompts, {l: v for l, v in vecs.items()})   # doctest: +SKIP
    >>> p.diff_vector[3, 5], p.diff_diff[3, 5]                                   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlib.arch import model_parts
from steerlib.evaluate import EvalResult, evaluate_routed
from steerlib.stats import Estimate, mean_estimate
from steerlib.steering import SteeringVector
from steerlib.traces import paired, sample_forced

__all__ = [
    "Persistence",
    "persistence",
    "pair_configs",
    "normalized_pair_accuracy",
    "pair_grid",
    "evaluate_pairs",
    "PairStudy",
    "pair_study",
    "pair_gap",
]


@dataclass
class Persistence:
    """The L x L matrices (rows: injection layer i, columns: read-out layer j) and final shifts."""

    diff_vector: np.ndarray
    diff_diff: np.ndarray
    layer_cos: np.ndarray
    delta_norm: np.ndarray  # mean |Δ_j(t)| over tokens
    final_shift: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> mean Δ at the last layer
    n_tokens: dict[int, int] = field(default_factory=dict)
    per_sequence_dv: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (i, j) -> per prompt
    per_sequence_dd: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (i, j) -> per prompt

    @staticmethod
    def _offdiag_se(per_sequence: dict[tuple[int, int], np.ndarray], n_boot: int = 1000, seed: int = 0) -> float:
        """Bootstrap standard error of the mean over layer pairs above the diagonal of a per-prompt cosine:
        the prompts are resampled (the same draw for every pair of layers) and the per-pair means
        averaged again."""
        pairs = [(i, j) for (i, j) in per_sequence if j > i]
        if not pairs:
            return float("nan")
        n = min(len(per_sequence[p]) for p in pairs)
        if n < 2:
            return float("nan")
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        draws = np.mean([per_sequence[p][:n][idx].mean(axis=1) for p in pairs], axis=0)
        return float(draws.std(ddof=1))

    def offdiag_diff_vector_se(self, n_boot: int = 1000, seed: int = 0) -> float:
        """Bootstrap standard error of the mean Diff-Vector cosine above the diagonal (prompts resampled)."""
        return self._offdiag_se(self.per_sequence_dv, n_boot, seed)

    def offdiag_diff_vector(self) -> Estimate:
        """The mean Diff-Vector cosine above the diagonal, with its bootstrap error
        (:meth:`offdiag_diff_vector_se`)."""
        upper = np.triu(np.ones(self.diff_vector.shape, dtype=bool), 1)
        return Estimate(float(np.nanmean(self.diff_vector[upper])), self.offdiag_diff_vector_se())

    def offdiag_diff_diff(self) -> Estimate:
        """The mean Diff-Diff cosine above the diagonal, with its bootstrap error over prompts.

        Example:
            >>> p = Persistence(*[np.full((2, 2), np.nan)] * 4)
            >>> p.diff_diff[0, 1] = 0.5
            >>> p.per_sequence_dd = {(0, 1): np.array([0.4, 0.6, 0.4, 0.6])}
            >>> p.offdiag_diff_diff().estimate
            0.5
        """
        upper = np.triu(np.ones(self.diff_diff.shape, dtype=bool), 1)
        return Estimate(float(np.nanmean(self.diff_diff[upper])), self._offdiag_se(self.per_sequence_dd))

    def summary(self) -> dict[str, Any]:
        """The matrices and their means (minimum for Diff-Diff) above the diagonal."""
        upper = np.triu(np.ones(self.diff_vector.shape, dtype=bool), 1)
        dv, dd = self.offdiag_diff_vector(), self.offdiag_diff_diff()
        return {
            "diff_vector": self.diff_vector,
            "diff_diff": self.diff_diff,
            "layer_cos": self.layer_cos,
            "mean_offdiag_diff_vector": dv.estimate,
            "mean_offdiag_diff_vector_se": dv.se,
            "mean_offdiag_diff_diff": dd.estimate,
            "mean_offdiag_diff_diff_se": dd.se,
            "min_offdiag_diff_diff": float(np.nanmin(self.diff_diff[upper])),
        }

    def growth(self, vectors: dict[int, SteeringVector]) -> np.ndarray:
        """Mean |Δ_j| relative to the injected vector's norm |s_i| (rows i, columns j)."""
        norms = np.array([float(vectors[i].vector.norm()) for i in range(self.delta_norm.shape[0])])
        return self.delta_norm / norms[:, None]

    def by_distance(self) -> list[dict[str, float]]:
        """Rows (i, j, normalised distance |i-j|/(L-1), the three cosines) for j >= i."""
        n = self.diff_vector.shape[0]
        return [
            {
                "i": i,
                "j": j,
                "distance": (j - i) / max(1, n - 1),
                "diff_vector": float(self.diff_vector[i, j]),
                "diff_diff": float(self.diff_diff[i, j]),
                "layer_cos": float(self.layer_cos[i, j]),
            }
            for i in range(n)
            for j in range(i, n)
            if not np.isnan(self.diff_diff[i, j])
        ]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b.expand_as(a), dim=-1, eps=1e-12)


@torch.no_grad()
def persistence(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    vectors: dict[int, SteeringVector],
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> Persistence:
    """Diff-Vector / Diff-Diff / layer cosines for every injection layer in ``vectors``.

    Args:
        vectors: layer -> the vector trained alone at that layer (site ``resid_post``).
    """
    n = model_parts(model).n_layers
    nan = lambda: np.full((n, n), np.nan)  # noqa: E731
    dv, dd, lc, dn = nan(), nan(), nan(), nan()
    out = Persistence(dv, dd, lc, dn)
    for i in tqdm(sorted(vectors), desc="persistence", disable=not progress):
        forced = sample_forced(model, tokenizer, prompts, [vectors[i]], max_new_tokens=max_new_tokens, seed=seed)
        seq_dv: dict[int, list[float]] = {j: [] for j in range(i, n)}
        seq_dd: dict[int, list[float]] = {j: [] for j in range(i, n)}
        norms: dict[int, list[float]] = {j: [] for j in range(i, n)}
        total = {j: torch.zeros(model_parts(model).hidden_size) for j in range(i, n)}
        count = 0
        sites = [("resid_post", j) for j in range(i, n)]
        for pb in paired(model, forced, [vectors[i]], sites, batch_size=batch_size):  # type: ignore[arg-type]
            real = pb.batch.real_mask()
            count += int(real.sum())
            for j in range(i, n):
                delta = pb.delta(("resid_post", j)).cpu()
                for b in range(delta.shape[0]):
                    d = delta[b][real[b]]
                    if j in vectors:
                        seq_dv[j].append(float(_cos(d, vectors[j].vector.detach().float().cpu()).mean()))
                    seq_dd[j].append(float(_cos(d, d.mean(0)).mean()))
                    norms[j].append(float(d.norm(dim=-1).mean()))
                    total[j] += d.sum(0)
        for j in range(i, n):
            if j in vectors:
                dv[i, j] = float(np.mean(seq_dv[j]))
                out.per_sequence_dv[(i, j)] = np.asarray(seq_dv[j])
                lc[i, j] = float(_cos(total[j] / count, vectors[j].vector.detach().float().cpu()))
            dd[i, j] = float(np.mean(seq_dd[j]))
            out.per_sequence_dd[(i, j)] = np.asarray(seq_dd[j])
            dn[i, j] = float(np.mean(norms[j]))
        out.final_shift[i] = total[n - 1] / count
        out.n_tokens[i] = count
    return out


def pair_configs(
    vectors: dict[int, SteeringVector], *, scale: float = 1.0, tag: str = "", singles: bool = True
) -> dict[str, list[SteeringVector]]:
    """Every single vector and every unordered pair, named ``"i"`` and ``"i+j{tag}"`` (plus ``"base"``).

    Args:
        scale: factor on both vectors of a pair (e.g. 0.5: the pair's mean instead of its sum).
        tag: appended to the pair names.
        singles: include ``"base"`` and the single vectors.
    """
    configs: dict[str, list[SteeringVector]] = {"base": []} if singles else {}
    if singles:
        configs.update({str(l): [v] for l, v in sorted(vectors.items())})
    for a, b in itertools.combinations(sorted(vectors), 2):
        configs[f"{a}+{b}{tag}"] = [
            replace(vectors[a], scale=vectors[a].scale * scale),
            replace(vectors[b], scale=vectors[b].scale * scale),
        ]
    return configs


def normalized_pair_accuracy(acc_ij: float, acc_i: float, acc_j: float, acc_all: float) -> float:
    """(acc_ij − max(acc_i, acc_j)) / (acc_all − max(acc_i, acc_j)); NaN when the denominator is 0.

    Example:
        >>> round(normalized_pair_accuracy(0.8, 0.6, 0.7, 0.9), 6)
        0.5
    """
    best = max(acc_i, acc_j)
    return (acc_ij - best) / (acc_all - best) if acc_all != best else float("nan")


def pair_grid(results: dict[str, EvalResult], layers: Sequence[int], acc_all: float) -> dict[str, Any]:
    """Accuracy and normalised accuracy grids (lists of rows, NaN off the upper triangle)."""
    n = len(layers)
    acc = [[float("nan")] * n for _ in range(n)]
    norm = [[float("nan")] * n for _ in range(n)]
    for x, a in enumerate(layers):
        acc[x][x] = results[str(a)].pass_at_1
        for y, b in enumerate(layers):
            if b > a:
                ij = results[f"{a}+{b}"].pass_at_1
                acc[x][y] = acc[y][x] = ij
                norm[x][y] = norm[y][x] = normalized_pair_accuracy(
                    ij, results[str(a)].pass_at_1, results[str(b)].pass_at_1, acc_all
                )
    return {"layers": list(layers), "accuracy": acc, "normalized": norm}


def evaluate_pairs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    vectors: dict[int, SteeringVector],
    extra: dict[str, list[SteeringVector]] | None = None,
    **kwargs: Any,
) -> dict[str, EvalResult]:
    """Base, each vector, each pair (and ``extra`` configurations) in one routed evaluation."""
    return evaluate_routed(model, tokenizer, prompts, answers, {**pair_configs(vectors), **(extra or {})}, **kwargs)


def pair_gap(accuracy: Sequence[Sequence[float]]) -> Estimate:
    """The mean over layer pairs of pass@1 with both vectors added minus the better single vector's
    (``accuracy``: :func:`pair_grid`'s matrix, single vectors on the diagonal), with the standard error
    of that mean over pairs. Pairs share layers, so they are not independent: the error is a lower bound.

    Example:
        >>> gap = pair_gap([[0.5, 0.2, 0.4], [0.2, 0.6, 0.3], [0.4, 0.3, 0.7]])
        >>> round(gap.estimate, 4), round(gap.se, 4)  # differences -0.4, -0.3, -0.4: sd 0.0577 / sqrt(3)
        (-0.3667, 0.0333)
    """
    n = len(accuracy)
    return mean_estimate([accuracy[i][j] - max(accuracy[i][i], accuracy[j][j])
                          for i in range(n) for j in range(i + 1, n)])


@dataclass
class PairStudy:
    """Every pair of single-layer vectors applied together (sum) and at half strength (mean)."""

    layers: list[int]
    results: dict[str, EvalResult]
    acc_all: float
    grid: dict[str, Any]  # pair_grid: accuracy and normalised accuracy
    half: list[list[float]]

    def rows(self, pers: Persistence | None = None) -> list[dict[str, float]]:
        """One row per pair i < j: normalised accuracy, sum, half, better single, distance (and cosines)."""
        n, out = len(self.layers), []
        for x, i in enumerate(self.layers):
            for y, j in enumerate(self.layers):
                if j <= i:
                    continue
                acc = self.grid["accuracy"]
                row = {
                    "i": i,
                    "j": j,
                    "normalized": self.grid["normalized"][x][y],
                    "distance": (j - i) / max(1, n - 1),
                    "half": self.half[x][y],
                    "sum": acc[x][y],
                    "best_single": max(acc[x][x], acc[y][y]),
                }
                if pers is not None:
                    row.update(diff_diff=float(pers.diff_diff[i, j]), diff_vector=float(pers.diff_vector[i, j]))
                out.append(row)
        return out

    def beyond(self, sign: int = 1) -> list[list[int]]:
        """Pairs whose sum beats (``sign=1``) or falls below (``-1``) the better single vector by > 2 SE."""
        out = []
        for i, j in itertools.combinations(self.layers, 2):
            r, best = self.results[f"{i}+{j}"], max(self.results[str(i)].pass_at_1, self.results[str(j)].pass_at_1)
            if sign * (r.pass_at_1 - best) > 2 * max(r.stderr, 1e-9):
                out.append([i, j])
        return out

    def correlations(self, pers: Persistence) -> dict[str, float]:
        """Pearson correlation of the normalised pair accuracy with distance and both cosines."""
        rows = self.rows(pers)
        norm = np.array([r["normalized"] for r in rows], dtype=float)
        ok = ~np.isnan(norm)
        return {
            k: float(np.corrcoef(norm[ok], np.array([r[k] for r in rows])[ok])[0, 1]) if ok.sum() > 2 else float("nan")
            for k in ("distance", "diff_diff", "diff_vector")
        }

    def gap(self) -> Estimate:
        """:func:`pair_gap` of the pairs' sums."""
        return pair_gap(self.grid["accuracy"])

    def summary(self) -> dict[str, Any]:
        """The headline numbers (means over pairs, counts, denominators of the normalised accuracy)."""
        rows = self.rows()
        return {
            "all_layer_pass_at_1": self.acc_all,
            "pair_accuracy": self.grid["accuracy"],
            "pair_normalized": self.grid["normalized"],
            "pair_half_accuracy": self.half,
            "pairs_better_than_both": self.beyond(1),
            "pairs_worse_than_best_single": self.beyond(-1),
            "mean_pair_sum_pass_at_1": float(np.mean([r["sum"] for r in rows])),
            "mean_pair_half_pass_at_1": float(np.mean([r["half"] for r in rows])),
            "mean_pair_best_single_pass_at_1": float(np.mean([r["best_single"] for r in rows])),
            "min_denominator": min(self.acc_all - r["best_single"] for r in rows),
            "max_denominator": max(self.acc_all - r["best_single"] for r in rows),
        }


def pair_study(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    vectors: dict[int, SteeringVector],
    all_layers: Sequence[SteeringVector],
    **kwargs: Any,
) -> PairStudy:
    """Base, every vector, every pair's sum and mean, and all-layer steering in one routed evaluation.

    Example:
        >>> study = pair_study(model, tok, prompts, answers, vecs, all_layer_vecs)  # doctest: +SKIP
        >>> study.summary()["mean_pair_sum_pass_at_1"]                              # doctest: +SKIP
    """
    extra = {"all layers": list(all_layers), **pair_configs(vectors, scale=0.5, tag=" half", singles=False)}
    res = evaluate_pairs(model, tokenizer, prompts, answers, vectors, extra=extra, **kwargs)
    layers = sorted(vectors)
    acc_all = res["all layers"].pass_at_1
    half = [
        [res[f"{min(i, j)}+{max(i, j)} half"].pass_at_1 if i != j else res[str(i)].pass_at_1 for j in layers]
        for i in layers
    ]
    return PairStudy(layers, res, acc_all, pair_grid(res, layers, acc_all), half)
