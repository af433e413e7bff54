"""Logit lens: what a vector (or a shift of the residual stream) says about the next token.

Two rankings, as in the authors' ``get_logit_lens(ranking_type=...)``:

- ``"prob"``: the vector through the final norm and the unembedding, ``softmax(W_U · norm(s))``;
- ``"cossim"``: cosine between the vector and every row of the unembedding ``W_U``.

``next_token_shift`` measures where a vector changes the model's predictions along a completion:
the KL divergence between steered and unsteered next-token distributions at every completion
position (teacher-forced on completions sampled with the vector), so one can see whether the change
concentrates on the first generated token. ``first_token_boost`` gives the change in probability of
each candidate first token.

Example:
    >>> top_tokens(model, tok, vecs[5].vector, k=5)                       # doctest: +SKIP
    [(' Step', 0.93), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from steerlib.arch import model_parts
from steerlib.stats import Estimate, bootstrap
from steerlib.steering import SteeringVector, steer
from steerlib.traces import encode_pairs, paired, run

__all__ = [
    "lens_scores",
    "top_token_ids",
    "top_tokens",
    "token_ranks",
    "PositionShift",
    "next_token_shift",
    "first_token_boost",
    "lens_table",
    "lens_matrix",
    "position_shifts",
    "PrefixTest",
    "prefix_test",
]

Ranking = Literal["prob", "cossim"]


@torch.no_grad()
def lens_scores(model: Any, vector: torch.Tensor, ranking: Ranking = "prob") -> torch.Tensor:
    """A score per vocabulary token: probability through final norm + unembedding, or cosine with W_U."""
    parts = model_parts(model)
    v = vector.detach().to(parts.lm_head.weight)
    if ranking == "prob":
        return parts.lm_head(parts.norm(v)).float().softmax(-1).cpu()
    if ranking == "cossim":
        w = parts.lm_head.weight.float()
        return torch.nn.functional.cosine_similarity(w, v.float().unsqueeze(0), dim=-1).cpu()
    raise ValueError(f"ranking must be 'prob' or 'cossim', not {ranking!r}")


def top_token_ids(
    model: Any,
    tokenizer: Any,
    vector: torch.Tensor,
    *,
    k: int = 10,
    ranking: Ranking = "prob",
    bottom: bool = False,
    skip_special: bool = True,
) -> list[tuple[int, float]]:
    """The ``k`` highest (or lowest, ``bottom=True``) scoring token ids as ``(id, score)``."""
    scores = lens_scores(model, vector, ranking).clone()
    special = set(getattr(tokenizer, "all_special_ids", []) or []) if skip_special else set()
    for i in special:
        scores[i] = float("inf") if bottom else float("-inf")
    order = scores.argsort(descending=not bottom)[:k]
    return [(int(i), float(scores[i])) for i in order]


def top_tokens(
    model: Any,
    tokenizer: Any,
    vector: torch.Tensor,
    *,
    k: int = 10,
    ranking: Ranking = "prob",
    bottom: bool = False,
    skip_special: bool = True,
) -> list[tuple[str, float]]:
    """Like :func:`top_token_ids`, decoded: ``(token, score)``."""
    return [
        (tokenizer.decode([i]), s)
        for i, s in top_token_ids(
            model, tokenizer, vector, k=k, ranking=ranking, bottom=bottom, skip_special=skip_special
        )
    ]


@torch.no_grad()
def token_ranks(model: Any, tokenizer: Any, vector: torch.Tensor, words: Sequence[str],
                ranking: Ranking = "prob") -> dict[str, int]:
    """Where each word's first token ranks in a vector's logit lens (1 = the top token of the whole
    vocabulary), for a list of words fixed before looking (the paper's process words: "To", "First", ...).
    A word is tokenised as it opens a completion (no leading space).

    Example:
        >>> token_ranks(model, tok, vecs[27].vector, ["To", "First"])   # doctest: +SKIP
        {'To': 1, 'First': 14}
    """
    scores = lens_scores(model, vector, ranking)
    out = {}
    for w in words:
        ids = tokenizer(w, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"{w!r} encodes to no token")
        out[w] = int((scores > scores[ids[0]]).sum()) + 1
    return out


@dataclass
class PositionShift:
    """KL(steered ‖ base) of next-token distributions at each completion position.

    Attributes:
        kl: one array per sequence; entry ``t`` is the KL at the prediction of completion token ``t``
            (``t = 0``: the first generated token, predicted from the last prompt column).
    """

    kl: list[np.ndarray]

    def mean_by_position(self, max_len: int | None = None) -> np.ndarray:
        """Mean KL at each position over the sequences that reach it."""
        n = max_len or max(len(k) for k in self.kl)
        return np.array([np.mean([k[t] for k in self.kl if len(k) > t]) for t in range(n)])

    def summary(self) -> dict[str, float]:
        """First-token share of the KL, KL at position 0, mean KL at later positions, mean length."""
        later = [k[1:] for k in self.kl if len(k) > 1]
        return {
            "first-token share of KL": self.first_token_share(),
            "KL at position 0": float(np.mean([k[0] for k in self.kl if len(k)])),
            "mean KL at later positions": float(np.mean(np.concatenate(later))) if later else float("nan"),
            "mean completion length": float(np.mean([len(k) for k in self.kl])),
        }

    def first_token_share(self) -> float:
        """Share of the total KL (summed over all sequences and positions) at the first position."""
        total = sum(float(k.sum()) for k in self.kl)
        return sum(float(k[0]) for k in self.kl if len(k)) / total if total else float("nan")

    def concentration(self, *, n_boot: int = 2000, seed: int = 0) -> Estimate:
        """How many times its even share the first position holds: :meth:`first_token_share` times the
        mean completion length (1: the KL spread evenly over the positions; chapter 09 fixed 10 as
        "concentrated" before its run), with its bootstrap error over sequences.

        Example:
            >>> shift = PositionShift([np.array([0.9, 0.05, 0.05]), np.array([0.5, 0.5]), np.array([1.0, 0.0, 0.0])])
            >>> round(shift.concentration().estimate, 3)  # share 2.4 / 3 = 0.8, mean length 8 / 3
            2.133
        """
        per = {"first": [float(k[0]) if len(k) else 0.0 for k in self.kl], "total": [float(k.sum()) for k in self.kl],
               "length": [len(k) for k in self.kl]}
        return bootstrap(per, lambda m: m["first"] / m["total"] * m["length"] if m["total"] else float("nan"),
                         n_boot=n_boot, seed=seed)


@torch.no_grad()
def next_token_shift(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[Sequence[int]],
    vectors: Sequence[SteeringVector],
    *,
    batch_size: int = 64,
) -> PositionShift:
    """Per-position KL between steered and base predictions along teacher-forced completions."""
    return _shift(model, encode_pairs(tokenizer, prompts, completions), vectors, batch_size)


def _shift(model: Any, forced: Any, vectors: Sequence[SteeringVector], batch_size: int = 64) -> PositionShift:
    kls: list[np.ndarray] = []
    for pb in paired(model, forced, vectors, [("logits", None)], batch_size=batch_size):
        base, st = pb.base[("logits", None)].log_softmax(-1), pb.steered[("logits", None)].log_softmax(-1)
        kl = (st.exp() * (st - base)).sum(-1).cpu()  # (B, T): KL at the prediction made at each column
        for b in range(kl.shape[0]):
            lo, hi = pb.batch.gen_start(b) - 1, pb.batch.width - 1  # predictions of completion tokens 0..n-1
            kls.append(kl[b, lo:hi].numpy())
    return PositionShift(kls)


@torch.no_grad()
def first_token_boost(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    vectors: Sequence[SteeringVector],
    *,
    k: int = 10,
    batch_size: int = 256,
) -> list[tuple[str, float, float]]:
    """Tokens whose probability as the first generated token rises most: ``(token, p_base, p_steered)``."""
    forced = encode_pairs(tokenizer, prompts, [[] for _ in prompts])
    p_base = torch.zeros(len(tokenizer))
    p_st = torch.zeros(len(tokenizer))
    for batch in forced.batches(batch_size):
        p_base += run(model, batch)[:, -1].softmax(-1).sum(0).cpu()[: len(tokenizer)]
        with steer(model, list(vectors)):
            p_st += run(model, batch)[:, -1].softmax(-1).sum(0).cpu()[: len(tokenizer)]
    p_base, p_st = p_base / len(prompts), p_st / len(prompts)
    order = (p_st - p_base).argsort(descending=True)[:k]
    return [(tokenizer.decode([int(i)]), float(p_base[i]), float(p_st[i])) for i in order]


def _fmt(pairs: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{t!r} {v:.2f}" for t, v in pairs)


def lens_table(
    model: Any,
    tokenizer: Any,
    directions: dict[Any, torch.Tensor],
    *,
    k: int = 4,
    columns: Sequence[str] = ("top by probability", "top by cosine", "bottom by cosine"),
) -> list[dict[str, Any]]:
    """One row per direction: ``|·|`` and its top/bottom tokens as text, for a chapter's table.

    ``columns`` picks among ``top by probability``, ``top by cosine`` and ``bottom by cosine``.

    Example:
        >>> rows = lens_table(model, tok, {5: vecs[5].vector}, k=3)   # doctest: +SKIP
        >>> rows[0]["top by probability"]                              # doctest: +SKIP
        "' Step' 0.93, ..."
    """
    spec = {
        "top by probability": dict(ranking="prob"),
        "top by cosine": dict(ranking="cossim"),
        "bottom by cosine": dict(ranking="cossim", bottom=True),
    }
    return [
        {
            "direction": name,
            "|·|": float(vec.norm()),
            **{c: _fmt(top_tokens(model, tokenizer, vec, k=k, **spec[c])) for c in columns},
        }  # type: ignore[arg-type]
        for name, vec in directions.items()
    ]


def lens_matrix(
    model: Any, tokenizer: Any, vectors: dict[int, SteeringVector], *, top: int = 2, bottom: int = 1
) -> tuple[list[str], np.ndarray]:
    """Cosine of every layer's vector with the union of each vector's ``top`` most aligned and
    ``bottom`` most anti-aligned tokens: ``(token strings, (tokens, layers) matrix)``."""
    ids: list[int] = []
    for v in vectors.values():
        picked = top_token_ids(model, tokenizer, v.vector, k=top, ranking="cossim") + top_token_ids(
            model, tokenizer, v.vector, k=bottom, ranking="cossim", bottom=True
        )
        ids.extend(i for i, _ in picked if i not in ids)
    cos = np.array([[float(lens_scores(model, v.vector, "cossim")[i]) for i in ids] for v in vectors.values()])
    return [repr(tokenizer.decode([i])) for i in ids], cos.T


def position_shifts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    vectors: dict[int, SteeringVector],
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> dict[int, PositionShift]:
    """:func:`next_token_shift` of every layer's vector on completions sampled with that vector."""
    from steerlib.traces import sample_forced

    out = {}
    for layer, v in vectors.items():
        forced = sample_forced(model, tokenizer, prompts, [v], max_new_tokens=max_new_tokens, seed=seed)
        out[layer] = _shift(model, forced, [v])
    return out


@dataclass
class PrefixTest:
    """pass@1 with and without the vector, with and without the most boosted first token forced
    (``evals``: ``base``, ``vector``, ``prefix`` and, optionally, ``prefix + vector`` and
    ``prefix + retrained vector``)."""

    prefix: str
    evals: dict[str, Any]

    def gain_share(self) -> Estimate:
        """The share of the vector's gain the prefix alone recovers, with its error (:meth:`summary`'s)."""
        s = self.summary()
        return Estimate(s["prefix_gain_share"], s["prefix_gain_share_se"])

    def summary(self) -> dict[str, Any]:
        """Accuracies, the share of the vector's gain the prefix alone recovers, and what a vector
        retrained with the prefix adds over the prefix alone."""
        from steerlib.stats import paired_gain, share_estimate

        acc = {k: r.pass_at_1 for k, r in self.evals.items()}
        gain = acc["vector"] - acc["base"]
        retrained = acc.get("prefix + retrained vector")
        share = share_estimate(self.evals["prefix"], self.evals["base"], self.evals["vector"])
        adds = None if retrained is None else paired_gain(self.evals["prefix + retrained vector"], self.evals["prefix"])
        return {
            "prefix_token": self.prefix,
            "base_pass_at_1": acc["base"],
            "steered_pass_at_1": acc["vector"],
            "prefix_pass_at_1": acc["prefix"],
            "prefix_plus_vector_pass_at_1": acc.get("prefix + vector"),
            "prefix_gain_share": (acc["prefix"] - acc["base"]) / gain if gain else float("nan"),
            "prefix_gain_share_se": share.se,
            "prefix_retrained_pass_at_1": retrained,
            "retrained_adds": None if retrained is None else retrained - acc["prefix"],
            "retrained_adds_se": None if adds is None else adds.se,
        }


def prefix_test(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    vector: SteeringVector,
    prefix: str,
    *,
    retrained: SteeringVector | None = None,
    **kwargs: Any,
) -> PrefixTest:
    """The prefix test (the paper, Section 6): base and vector, then the same with ``prefix`` forced
    after every prompt (and a vector retrained with the prefix present, if given), same problems.

    Example:
        >>> t = prefix_test(model, tok, prompts, answers, vecs[5], " Step")   # doctest: +SKIP
        >>> t.summary()["prefix_gain_share"]                                  # doctest: +SKIP
    """
    from steerlib.evaluate import evaluate_routed

    evals = evaluate_routed(model, tokenizer, prompts, answers, {"base": [], "vector": [vector]}, **kwargs)
    forced = {"prefix": [], "prefix + vector": [vector]}
    evals.update(evaluate_routed(model, tokenizer, prompts, answers, forced, prefix=prefix, **kwargs))
    if retrained is not None:
        evals.update(
            evaluate_routed(
                model, tokenizer, prompts, answers, {"prefix + retrained vector": [retrained]}, prefix=prefix, **kwargs
            )
        )
    return PrefixTest(prefix, evals)
