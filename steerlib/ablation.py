"""Where a vector acts: moved past attention or past a whole block, attention-pattern change, norm attenuation.

- Skip-Attn (authors' ``all_attn``): the vector trained at layer ``l`` is added after layer ``l + 1``'s
  attention instead of after layer ``l`` (site ``post_attn`` of ``l + 1``), so the next attention never
  sees it; only that block's MLP and everything after do.
- Skip-Layer (``all_layer``): added after the whole of layer ``l + 1`` (site ``resid_post`` of
  ``l + 1``).
- MLP-only: given to layer ``l + 1``'s MLP input alone (site ``mlp_in`` of ``l + 1``), never added to the
  residual stream: what the next MLP alone makes of it.
- Attention-pattern change: Jensen-Shannon divergence between each head's attention distribution
  with and without the vector, per query position, averaged over real query tokens (the paper gives
  no number, only "largely unchanged"; this measure is our choice).
- Norm attenuation: the vector's size relative to the residual stream before and after the next
  norm (layer ``l + 1``'s input norm, or the final norm for the last layer):
  ``raw = |s| / |h|`` and ``effective = |N(h + s) − N(h)| / |N(h)|``, averaged over tokens.

Example:
    >>> with steer(model, skip_attn(vecs[4])):                     # doctest: +SKIP
    ...     res = evaluate(model, tok, prompts, answers)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from steerlib.arch import model_parts
from steerlib.steering import SteeringVector, steer
from steerlib.traces import Forced, layer_modules, paired, record, record_sites, run

__all__ = [
    "skip_attn",
    "skip_layer",
    "mlp_only",
    "eager_attention",
    "attention_js",
    "norm_attenuation",
    "mlp_shift",
    "site_norms",
    "random_like",
    "head_patch_specs",
    "evaluate_patches",
]


def skip_attn(v: SteeringVector) -> SteeringVector:
    """The vector of layer ``l`` moved after layer ``l + 1``'s attention (the next attention never sees it)."""
    return replace(v, layer=v.layer + 1, site="post_attn")


def skip_layer(v: SteeringVector) -> SteeringVector:
    """The vector of layer ``l`` moved past the whole of layer ``l + 1``."""
    return replace(v, layer=v.layer + 1, site="resid_post")


def mlp_only(v: SteeringVector) -> SteeringVector:
    """The vector of layer ``l`` given to layer ``l + 1``'s MLP input alone (site ``mlp_in``): the residual
    stream never carries it, so only that MLP sees it."""
    return replace(v, layer=v.layer + 1, site="mlp_in")


@contextmanager
def eager_attention(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Switch to eager attention and record the attention weights ``(B, heads, Tq, Tk)`` of ``layers``."""
    parts = model_parts(model)
    old = parts.causal_lm.config._attn_implementation
    parts.causal_lm.set_attn_implementation("eager")
    out: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:

        def fn(_m: nn.Module, _a: Any, o: Any, layer: int = layer) -> None:
            out[layer] = o[1].detach()

        handles.append(parts.layers[layer].self_attn.register_forward_hook(fn))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
        parts.causal_lm.set_attn_implementation(old)


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (a.clamp_min(1e-30).log() - b.clamp_min(1e-30).log())).sum(-1)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@torch.no_grad()
def attention_js(
    model: nn.Module, forced: Forced, vectors: Sequence[SteeringVector], layers: Sequence[int], *, batch_size: int = 32
) -> dict[int, np.ndarray]:
    """Mean JS divergence (nats) per head between steered and base attention, per layer in ``layers``."""
    sums = {l: None for l in layers}
    count = 0
    with eager_attention(model, layers) as att:
        for batch in forced.batches(batch_size):
            run(model, batch, logits_to_keep=1)  # activations only
            base = {l: att[l].float() for l in layers}
            with steer(model, list(vectors)):
                run(model, batch, logits_to_keep=1)  # activations only
            real = batch.real_mask()  # (B, T) query rows that are real tokens
            for l in layers:
                js = _js(att[l].float(), base[l]).cpu()  # (B, H, T)
                js = torch.where(real.unsqueeze(1), js.nan_to_num(0.0), 0.0).sum((0, 2))  # pad rows may be NaN
                sums[l] = js if sums[l] is None else sums[l] + js
            count += int(real.sum())
    return {l: (sums[l] / count).numpy() for l in layers}


@torch.no_grad()
def norm_attenuation(
    model: nn.Module, forced: Forced, vectors: dict[int, SteeringVector], *, batch_size: int = 64
) -> dict[int, dict[str, float]]:
    """Raw and effective size of each layer's vector at the next norm (see module docstring)."""
    parts = model_parts(model)
    mods = layer_modules(model)
    acc: dict[int, dict[str, float]] = {l: {"raw": 0.0, "effective": 0.0} for l in vectors}
    count = 0
    for batch in forced.batches(batch_size):
        with record(model, mods) as out:
            run(model, batch, logits_to_keep=1)  # activations only
        real = batch.real_mask()
        count += int(real.sum())
        for l, v in vectors.items():
            h = out[l][real].float()
            nxt = parts.layers[l + 1].input_layernorm if l + 1 < parts.n_layers else parts.norm
            s = v.vector.detach().to(h) * v.scale
            n0, n1 = nxt(h), nxt(h + s)
            acc[l]["raw"] += float((s.norm() / h.norm(dim=-1)).sum())
            acc[l]["effective"] += float(((n1 - n0).norm(dim=-1) / n0.norm(dim=-1)).sum())
    res = {}
    for l, a in acc.items():
        raw, eff = a["raw"] / count, a["effective"] / count
        res[l] = {"raw": raw, "effective": eff, "ratio": eff / raw if raw else float("nan")}
    return res


@torch.no_grad()
def mlp_shift(
    model: nn.Module,
    forced: Forced,
    vectors: Sequence[SteeringVector],
    layer: int,
    *,
    generated_only: bool = True,
    batch_size: int = 64,
) -> torch.Tensor:
    """Mean change of layer ``layer``'s MLP output under ``vectors`` (over completion or all tokens)."""
    total, count = None, 0
    for pb in paired(model, forced, vectors, [("mlp_out", layer)], batch_size=batch_size):
        d = pb.delta(("mlp_out", layer))
        sel = pb.batch.generated_mask() if generated_only else pb.batch.real_mask()
        part = d[sel.to(d.device)].sum(0).cpu()
        total = part if total is None else total + part
        count += int(sel.sum())
    assert total is not None
    return total / max(1, count)


@torch.no_grad()
def site_norms(model: nn.Module, forced: Forced, layer: int, *, batch_size: int = 64) -> dict[str, float]:
    """Mean residual-stream norm over real tokens at layer ``layer``'s sites: its input (``resid_pre``),
    after its attention (``post_attn``) and its output (``resid_post``). A vector of a given size is
    relatively larger where the stream is small.
    """
    names = ("resid_pre", "post_attn", "resid_post")
    sums = dict.fromkeys(names, 0.0)
    count = 0
    for batch in forced.batches(batch_size):
        with record_sites(model, [(n, layer) for n in names]) as out:  # type: ignore[misc]
            run(model, batch, logits_to_keep=1)  # activations only
        real = batch.real_mask()
        for name in names:
            h = out[(name, layer)]  # type: ignore[index]
            sums[name] += float(h[real.to(h.device)].float().norm(dim=-1).sum())
        count += int(real.sum())
    return {k: v / max(1, count) for k, v in sums.items()}


def random_like(v: SteeringVector, seed: int = 0) -> SteeringVector:
    """A random direction with ``v``'s norm at ``v``'s placement (the yardstick for attention change)."""
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(v.vector.shape[0], generator=g)
    return replace(v, vector=(rand / rand.norm() * float(v.vector.norm())).to(v.vector))


def head_patch_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The authors' patch variants for one layer's attention, as keyword arguments of
    :func:`steerlib.headpatch.patch_attention`: the whole attention path; every query head alone
    (Steer-Head) and all but it (Skip-Head); every KV group alone and all but it; the q, k or v
    projection of one group; v of every group.

    Example:
        >>> specs = head_patch_specs(model)            # doctest: +SKIP
        >>> specs["Steer-Head 0"]                       # doctest: +SKIP
        {'heads': [0]}
    """
    from steerlib.headpatch import group_heads

    parts = model_parts(model)
    heads = range(parts.n_heads)
    specs: dict[str, dict[str, Any]] = {"all heads (attention path only)": {}}
    for h in heads:
        specs[f"Steer-Head {h}"] = {"heads": [h]}
        specs[f"Skip-Head {h}"] = {"heads": [x for x in heads if x != h]}
    for g in range(parts.n_kv_heads):
        group = group_heads(model, g)
        specs[f"Steer-Group {g}"] = {"heads": group}
        specs[f"Skip-Group {g}"] = {"heads": [x for x in heads if x not in group]}
        specs.update({f"{p}-only, group {g}": {"projections": {p: [g]}} for p in ("q", "k", "v")})
    specs["v-only, all groups"] = {"projections": {"v": None}}
    return specs


def evaluate_patches(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    vector: torch.Tensor,
    layer: int,
    specs: dict[str, dict[str, Any]],
    **kwargs: Any,
) -> dict[str, Any]:
    """pass@1 of every patch in ``specs`` (see :func:`head_patch_specs`) on the same problems."""
    from steerlib.evaluate import evaluate
    from steerlib.headpatch import patch_attention

    out = {}
    for name, spec in specs.items():
        with patch_attention(model, vector, layer, **spec):
            out[name] = evaluate(model, tokenizer, prompts, answers, **kwargs)
    return out


