"""Micro-batches of rows of similar completion length for the teacher-forced loss pass.

The loss pass computes each micro-batch over the prompt width plus the longest completion in it, so a
short completion batched with a long one is mostly padding. On the organism, where a policy mixes
direct answers (about 10 tokens) with worked solutions (about 50), padding is a third of the positions
a step computes at the start of a run. :func:`length_batches` orders a routing group's rows by
completion length and cuts them into runs that minimise the positions computed plus a fixed cost per
extra pass (``pass_positions``, the per-pass overhead in units of positions), each run within the
token budget (a run too large for it is split into equal-width chunks). The cut is optimal for that
cost (dynamic programming over the distinct lengths).

The loss is a sum over rows with a denominator fixed per group, so the batches change only the order
in which per-row terms are added: log-probs per row are the same up to float rounding.

Example:
    >>> lengths = torch.tensor([3, 40, 4, 38, 5, 41])
    >>> [b.tolist() for b in length_batches(lengths, prompt_width=10, token_budget=1000, pass_positions=20)]
    [[0, 2, 4], [3, 1, 5]]
    >>> [b.tolist() for b in length_batches(lengths, prompt_width=10, token_budget=1000, pass_positions=500)]
    [[0, 2, 4, 3, 1, 5]]
"""

from __future__ import annotations

import math

import torch

__all__ = ["PASS_POSITIONS", "length_batches", "padded_positions"]

# What one extra loss pass costs beyond its positions, in positions: measured on the organism at 2 threads
# (benchmarks/bench_loss_pass.py: ~25 ms of per-op cost per pass, ~30k positions/s through six blocks).
PASS_POSITIONS = 1024


def length_batches(
    lengths: torch.Tensor,
    *,
    prompt_width: int,
    token_budget: int,
    row_cap: int | None = None,
    pass_positions: int = PASS_POSITIONS,
) -> list[torch.Tensor]:
    """Row indices (into ``lengths``) per micro-batch, shortest completions first.

    Args:
        lengths: completion length of each row.
        prompt_width: the (padded) prompt columns every row carries.
        token_budget: at most this many positions (rows x (prompt width + longest completion)) per batch.
        row_cap: at most this many rows per batch (e.g. so that one position's logits fit).
        pass_positions: the cost of one more pass, in positions.
    """
    if lengths.numel() == 0:
        return []
    order = torch.sort(lengths.cpu(), stable=True)
    values, counts = torch.unique_consecutive(order.values, return_counts=True)
    ends = counts.cumsum(0).tolist()  # rows up to and including each distinct length
    widths = [prompt_width + max(1, int(v)) for v in values.tolist()]
    limit = token_budget if row_cap is None else row_cap
    caps = [max(1, min(limit, token_budget // w)) for w in widths]  # rows per pass at each width
    best = [0.0] * (len(widths) + 1)  # best[j]: cost of the rows of the first j distinct lengths
    cut = [0] * (len(widths) + 1)
    for j in range(1, len(widths) + 1):
        w, cap = widths[j - 1], caps[j - 1]
        costs = []
        for i in range(j):  # the last run covers distinct lengths i .. j-1
            rows = ends[j - 1] - (ends[i - 1] if i else 0)
            costs.append(best[i] + rows * w + math.ceil(rows / cap) * pass_positions)
        cut[j] = min(range(j), key=costs.__getitem__)
        best[j] = costs[cut[j]]
    runs, j = [], len(widths)
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    out = []
    for i, j in reversed(runs):
        lo, hi, cap = ends[i - 1] if i else 0, ends[j - 1], caps[j - 1]
        n = math.ceil((hi - lo) / cap)
        size = math.ceil((hi - lo) / n)  # equal chunks when the run exceeds the budget
        out.extend(order.indices[a : min(hi, a + size)] for a in range(lo, hi, size))
    return out


def padded_positions(lengths: torch.Tensor, batches: list[torch.Tensor], prompt_width: int) -> int:
    """Positions a loss pass over ``batches`` computes (each batch padded to its longest completion).

    Example:
        >>> padded_positions(torch.tensor([3, 40]), [torch.tensor([0, 1])], 10)
        100
    """
    return sum(len(b) * (prompt_width + max(1, int(lengths[b].max()))) for b in batches)
