"""DiffSAE: a top-k sparse autoencoder on steered-minus-base activations, and its feature statistics.

The paper trains a sparse autoencoder on the *difference* between steered and unsteered activations
(Section 8, Figures 7-8; its architecture, width and k are not given) and ranks features by how much more often
they fire on correct than on incorrect generations. Here:

- the SAE is top-k (``z = TopK(ReLU(W_enc (x − b_dec) + b_enc))``, ``x̂ = W_dec z + b_dec``, unit-norm
  decoder rows, Adam on the mean squared error), small enough to train on a CPU in seconds;
- :func:`collect_diffs` samples completions with the vector, teacher-forces them with and without it
  and returns the per-token differences at a read-out layer (prompt and completion tokens: the last
  prompt token's activation decides the first generated token), with each completion's correctness;
- :func:`feature_stats` gives each feature's firing rate on correct and incorrect generations (a
  feature fires on a generation if it is active at any of its tokens), ranked by correct − incorrect;
- :func:`held_out_top` chooses the top feature on half of the generations and measures it on the other
  half, and :func:`seed_spread` repeats that over SAE seeds and rollout sets;
- :func:`explained_share` measures how much of the vector's effect on next-token predictions the
  chosen features carry: the read-out layer's difference is replaced by its reconstruction from those
  features only, and the share is ``1 − KL(steered ‖ patched) / KL(steered ‖ base)``.

Example:
    >>> sae, hist = train_sae(diffs, n_features=128, k=8, steps=2000)    # doctest: +SKIP
    >>> stats = feature_stats(sae, diffs)                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from steerlib.steering import SteeringVector
from steerlib.traces import Forced, add_to_output, encode_pairs, paired, run

__all__ = [
    "TopKSAE",
    "train_sae",
    "seed_spread",
    "Diffs",
    "collect_diffs",
    "feature_stats",
    "TopFeature",
    "held_out_top",
    "explained_share",
    "firing_frequency",
    "top_activations",
    "explained_shares",
]


class TopKSAE(nn.Module):
    """A top-k sparse autoencoder with unit-norm decoder rows."""

    def __init__(self, d: int, n_features: int, k: int, seed: int = 0, decoder_bias: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n_features, d, generator=g)
        w = w / w.norm(dim=-1, keepdim=True)
        self.k = k
        self.w_dec = nn.Parameter(w.clone())  # (m, d): feature directions
        self.w_enc = nn.Parameter(w.clone())  # (m, d)
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d), requires_grad=decoder_bias)  # off: features carry the mean too

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes ``(…, m)`` with at most ``k`` non-zeros per row."""
        pre = torch.relu((x - self.b_dec) @ self.w_enc.T + self.b_enc)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction from codes."""
        return z @ self.w_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalise(self) -> None:
        """Project decoder rows back to unit norm."""
        self.w_dec.div_(self.w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def train_sae(
    data: torch.Tensor,
    n_features: int,
    k: int,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    decoder_bias: bool = False,
    progress: bool = True,
) -> tuple[TopKSAE, dict[str, list[float]]]:
    """Train a :class:`TopKSAE` on rows of ``data`` ``(N, d)``.

    Args:
        decoder_bias: learn a decoder bias (initialised at the data mean). Off by default for
            differences: then the mean shift, usually most of a vector's effect, is a feature too.

    Returns:
        The SAE and its history: ``step``, ``fvu`` (fraction of variance unexplained, per batch).
    """
    data = data.float()
    sae = TopKSAE(data.shape[1], n_features, k, seed, decoder_bias)
    if decoder_bias:
        with torch.no_grad():
            sae.b_dec.copy_(data.mean(0))
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    var = float(((data - data.mean(0)) ** 2).sum(-1).mean()) or float("nan")  # constant data: FVU undefined
    hist: dict[str, list[float]] = {"step": [], "fvu": []}
    for step in tqdm(range(steps), desc="DiffSAE", disable=not progress):
        x = data[torch.randint(0, data.shape[0], (batch_size,), generator=g)]
        x_hat, _ = sae(x)
        loss = ((x_hat - x) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalise()
        if step % 50 == 0 or step == steps - 1:
            hist["step"].append(step)
            hist["fvu"].append(float(loss.detach()) / var)
    sae.eval()
    return sae, hist


@dataclass
class Diffs:
    """Steered-minus-base activations at one layer, per completion.

    Attributes:
        per_seq: one ``(T_b, d)`` tensor per sequence (its prompt and completion tokens).
        correct: whether each completion was scored correct.
        forced: the teacher-forced batch (for :func:`explained_share`).
        token_ids: each completion's token ids.
    """

    per_seq: list[torch.Tensor]
    correct: list[bool]
    forced: Forced
    token_ids: list[list[int]]

    def stacked(self) -> torch.Tensor:
        """All completion tokens' differences as ``(N, d)``."""
        return torch.cat(self.per_seq)


@torch.no_grad()
def collect_diffs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    vector: SteeringVector,
    layer: int,
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 64,
) -> Diffs:
    """Sample with ``vector``, teacher-force with and without it, keep layer ``layer``'s differences."""
    from steerlib.evaluate import evaluate

    res = evaluate(model, tokenizer, prompts, answers, vectors=[vector], max_new_tokens=max_new_tokens, seed=seed)
    comps = sorted(res.completions, key=lambda c: c.prompt_index)
    forced = encode_pairs(tokenizer, prompts, [c.token_ids for c in comps])
    per_seq: list[torch.Tensor] = []
    for pb in paired(model, forced, [vector], [("resid_post", layer)], batch_size=batch_size):
        real = pb.batch.real_mask()
        delta = pb.delta(("resid_post", layer))
        per_seq.extend(delta[b][real[b].to(delta.device)].cpu() for b in range(real.shape[0]))
    return Diffs(per_seq, [bool(c.reward) for c in comps], forced, [c.token_ids for c in comps])


@torch.no_grad()
def _fired(sae: TopKSAE, diffs: Diffs) -> torch.Tensor:
    """``(n_sequences, n_features)``: 1 where the feature is active at any token of the sequence."""
    m = sae.b_enc.shape[0]
    return torch.stack([(sae.encode(x) > 0).any(0) if len(x) else torch.zeros(m, dtype=torch.bool)
                        for x in diffs.per_seq]).float()


def _rates(fired: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's firing rate on the correct and on the incorrect rows (NaN where there are none)."""
    nan = torch.full((fired.shape[1],), float("nan"))
    return (fired[correct].mean(0) if correct.any() else nan), (fired[~correct].mean(0) if (~correct).any() else nan)


@torch.no_grad()
def feature_stats(sae: TopKSAE, diffs: Diffs) -> list[dict[str, float]]:
    """Per feature: firing rate on correct / incorrect generations, their difference (correct − incorrect)
    and mean activation; ranked as the paper ranks them, most associated with correct generations first
    (the features most associated with incorrect ones come last)."""
    rc, ri = _rates(_fired(sae, diffs), torch.tensor(diffs.correct, dtype=torch.bool))
    mean_act = sae.encode(diffs.stacked()).mean(0)
    rows = [{"feature": f, "correct_rate": float(rc[f]), "incorrect_rate": float(ri[f]),
             "difference": float(rc[f] - ri[f]), "mean_activation": float(mean_act[f])} for f in range(len(rc))]
    return sorted(rows, key=lambda r: -r["difference"] if not np.isnan(r["difference"]) else float("inf"))


@dataclass(frozen=True)
class TopFeature:
    """The top feature of one SAE by (correct − incorrect) firing rate, chosen on one random half of the
    generations and measured on the other, so that choosing it does not inflate its difference.

    Attributes:
        rollouts, sae_seed: which rollout set and SAE seed.
        feature: the chosen feature.
        correct_rate, incorrect_rate: its firing rates on the held-out half.
        difference, se: correct − incorrect on the held-out half, and its binomial error (each rate's
            variance from (x + 1) / (n + 2), so that a rate of 0 or 1 still carries one).
        final_fvu: the SAE's fraction of variance unexplained at the end of training.
    """

    rollouts: str
    sae_seed: int
    feature: int
    correct_rate: float
    incorrect_rate: float
    difference: float
    se: float
    final_fvu: float

    @property
    def label(self) -> str:
        """Which SAE, in words."""
        return f"{self.rollouts}, SAE {self.sae_seed}"

    @property
    def tracks(self) -> str:
        """Which generations the feature fires on more in the held-out half."""
        return "correct" if self.difference > 0 else "incorrect"


@torch.no_grad()
def held_out_top(sae: TopKSAE, diffs: Diffs, *, seed: int = 0, rollouts: str = "", final_fvu: float = float("nan")
                 ) -> TopFeature:
    """:class:`TopFeature`: rank the features by (correct − incorrect) firing rate on a random half of the
    generations (``seed``), measure the top one on the other half. The SAE never sees the labels, so the
    held-out half tests the choice.

    Example:
        >>> sae = TopKSAE(d=2, n_features=2, k=1)
        >>> with torch.no_grad():
        ...     _ = sae.w_enc.copy_(torch.eye(2))  # feature 0 reads the first axis, feature 1 the second
        >>> tokens = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])] * 20  # correct, incorrect, ...
        >>> top = held_out_top(sae, Diffs(tokens, [True, False] * 20, None, []), seed=0)
        >>> top.feature, top.difference, top.tracks, round(top.se, 3)
        (0, 1.0, 'correct', 0.125)
    """
    fired, correct = _fired(sae, diffs), torch.tensor(diffs.correct, dtype=torch.bool)
    order = torch.randperm(len(correct), generator=torch.Generator().manual_seed(seed))
    pick, test = order[: len(order) // 2], order[len(order) // 2:]
    rc, ri = _rates(fired[pick], correct[pick])
    feature = int(torch.nan_to_num(rc - ri, nan=-2.0).argmax())
    hit, ok = fired[test, feature], correct[test]
    nc, ni = int(ok.sum()), int((~ok).sum())
    pc, pi = (float(hit[ok].mean()) if nc else float("nan")), (float(hit[~ok].mean()) if ni else float("nan"))
    qc, qi = (float(hit[ok].sum()) + 1) / (nc + 2), (float(hit[~ok].sum()) + 1) / (ni + 2)  # rates kept off 0 and 1
    se = float(np.sqrt(qc * (1 - qc) / nc + qi * (1 - qi) / ni)) if nc and ni else float("nan")
    return TopFeature(rollouts, seed, feature, pc, pi, pc - pi, se, final_fvu)


@torch.no_grad()
def explained_share(
    model: Any,
    sae: TopKSAE,
    diffs: Diffs,
    vector: SteeringVector,
    layer: int,
    features: Sequence[int] | None,
    *,
    batch_size: int = 64,
) -> float:
    """Share of the vector's next-token KL (completion positions) carried by ``features`` at ``layer``.

    The steered run's difference at ``layer`` (every real token) is replaced by its SAE
    reconstruction restricted to ``features`` (``None``: all features) added to the base run's
    activation; later layers recompute from there.
    """
    keep = None
    if features is not None:
        keep = torch.zeros(sae.b_enc.shape[0])
        keep[list(features)] = 1.0
    kl_base = kl_patch = 0.0
    site = ("resid_post", layer)
    for pb in paired(model, diffs.forced, [vector], [site, ("logits", None)], batch_size=batch_size):
        batch = pb.batch
        lp0, lp1 = pb.base[("logits", None)].log_softmax(-1), pb.steered[("logits", None)].log_softmax(-1)
        z = sae.encode(pb.delta(site).cpu())
        if keep is not None:
            z = z * keep
        d_hat = z @ sae.w_dec + sae.b_dec
        with add_to_output(model, layer, d_hat * batch.real_mask().unsqueeze(-1)):
            lp2 = run(model, batch).log_softmax(-1)
        sel = batch.generated_mask()
        sel = torch.roll(sel, -1, dims=1)  # predictions of completion tokens are made one column earlier
        sel[:, -1] = False
        p1 = lp1.exp()
        kl_base += float((p1 * (lp1 - lp0)).sum(-1)[sel].sum())
        kl_patch += float((p1 * (lp1 - lp2)).sum(-1)[sel].sum())
    return 1 - kl_patch / kl_base if kl_base else float("nan")


@torch.no_grad()
def firing_frequency(sae: TopKSAE, diffs: Diffs) -> torch.Tensor:
    """Share of generations on which each feature fires at any token, ``(n_features,)``."""
    return _fired(sae, diffs).mean(0)


@torch.no_grad()
def top_activations(
    sae: TopKSAE, diffs: Diffs, feature: int, tokenizer: Any, *, n: int = 10, context: int = 6
) -> list[dict[str, Any]]:
    """The ``n`` tokens where ``feature`` is most active: activation, preceding context, the token,
    whether it lies in the prompt or the completion, and whether that generation was correct."""
    hits = []
    for b, x in enumerate(diffs.per_seq):
        acts = sae.encode(x)[:, feature]
        hits.extend((float(acts[t]), b, t) for t in acts.nonzero().flatten().tolist())
    rows = []
    for act, b, t in sorted(hits, key=lambda h: -h[0])[:n]:
        ids = diffs.forced.ids[b][diffs.forced.mask[b].bool()].tolist()
        rows.append(
            {
                "activation": act,
                "context": tokenizer.decode(ids[max(0, t - context) : t]),
                "token": tokenizer.decode([ids[t]]),
                "correct": diffs.correct[b],
                "position": "prompt" if t < diffs.forced.prompt_len[b] else "completion",
            }
        )
    return rows


def explained_shares(
    model: Any,
    sae: TopKSAE,
    diffs: Diffs,
    vector: SteeringVector,
    layer: int,
    stats: list[dict[str, float]],
    *,
    top_n: int = 3,
    n_random: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`explained_share` of the ``top_n`` features by correct-vs-incorrect difference, of the
    ``top_n`` most frequent, of random sets of ``top_n`` (mean of ``n_random`` draws) and of all."""
    n_features = sae.b_enc.shape[0]
    rng = np.random.default_rng(seed)
    most_frequent = firing_frequency(sae, diffs).argsort(descending=True)[:top_n].tolist()
    share = lambda feats: explained_share(model, sae, diffs, vector, layer, feats)  # noqa: E731
    return {
        f"top {top_n} by correct-incorrect difference": share([s["feature"] for s in stats[:top_n]]),
        f"{top_n} most frequent": share(most_frequent),
        f"{top_n} random (mean of {n_random})": float(
            np.mean([share(rng.choice(n_features, top_n, replace=False).tolist()) for _ in range(n_random)])
        ),
        f"all {n_features} features": share(None),
    }


def seed_spread(diff_sets: dict[str, Diffs], n_features: int, k: int, *, steps: int,
                seeds: Sequence[int]) -> list[TopFeature]:
    """One SAE per rollout set and SAE seed, each with its held-out top feature (:func:`held_out_top`,
    split by the SAE seed). A finding about the top feature means something only if it holds across them.

    Example:
        >>> rows = seed_spread({"seed 0": diffs}, 64, 4, steps=3000, seeds=[0, 1, 2])  # doctest: +SKIP
        >>> sorted({r.tracks for r in rows})                                        # doctest: +SKIP
        ['correct']
    """
    rows = []
    for name, diffs in diff_sets.items():
        for seed in seeds:
            sae, hist = train_sae(diffs.stacked(), n_features, k, steps=steps, seed=seed, progress=False)
            rows.append(held_out_top(sae, diffs, seed=seed, rollouts=name, final_fvu=hist["fvu"][-1]))
    return rows
