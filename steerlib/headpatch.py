"""Head-level patching of a vector inside one layer's attention, as the authors did it (the paper's Section 7,
Figure 5).

The vector ``s`` (e.g. the penultimate layer's) never enters the residual stream. Inside decoder layer
``layer`` two attention passes are computed: a *vanilla* one on ``norm(h)`` and a *patched* one in
which the chosen projections (q, k, v) of the chosen KV groups read ``norm(h + s)`` instead. The
attention output (before ``o_proj``) is then taken from the patched pass for the chosen query heads
and from the vanilla pass for the others, and the layer continues as usual (residual add, MLP), so
the patched attention output reaches both the residual stream and the MLP (the authors'
``path_patch_mode="everywhere"``).

The authors' variants map onto :func:`patch_attention` as follows (``G`` = query heads of KV group g):

- Steer-Head ``h`` (``inverse_head``): ``heads=[h]``; Skip-Head ``h`` (``head``): every head but ``h``;
- Steer-Group ``g`` (``inverse_group``): ``heads=G``; Skip-Group ``g``: every head not in ``G``;
- only the value projection of group ``g`` sees the vector (``inverse_v_proj``):
  ``projections={"v": [g]}``; likewise ``"q"``, ``"k"``; every value projection: ``{"v": None}``.

Generation with a KV cache works: the patched pass keeps its own key/value cache, attached to the
model's cache and reindexed with it (shared prefill, rows leaving the batch); the vanilla pass uses the
model's.

Example:
    >>> with patch_attention(model, s4, layer=5, projections={"v": [1]}):     # doctest: +SKIP
    ...     res = evaluate(model, tok, prompts, answers)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from steerlib.arch import model_parts
from steerlib.cachesync import follow, followers

__all__ = ["patch_attention", "group_heads"]

_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}


class _PrivateCache:
    """A minimal key/value cache for the patched pass (one layer)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], -2), torch.cat([self.v, v], -2)
        return self.k, self.v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.k is None else int(self.k.shape[-2])

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.k is not None:
            self.k, self.v = self.k.repeat_interleave(repeats, 0), self.v.repeat_interleave(repeats, 0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k[indices], self.v[indices]


def _private_for(cache: Any) -> _PrivateCache:
    """The patched pass's cache that belongs to the model's ``cache`` and follows its batch changes
    (shared prefill, finished rows leaving the batch) through :func:`steerlib.cachesync.follow`."""
    private = next((f for f in followers(cache) if isinstance(f, _PrivateCache)), None)
    if private is None:
        private = _PrivateCache()
        follow(cache, private)
    return private


def group_heads(model: nn.Module, group: int) -> list[int]:
    """Query heads that share KV group ``group``."""
    parts = model_parts(model)
    per = parts.heads_per_group
    return list(range(group * per, (group + 1) * per))


@contextmanager
def patch_attention(
    model: nn.Module,
    vector: torch.Tensor,
    layer: int,
    *,
    heads: Sequence[int] | None = None,
    projections: dict[str, Sequence[int] | None] | None = None,
) -> Iterator[None]:
    """Give ``vector`` to layer ``layer``'s attention only, mixed per head and projection.

    Args:
        vector: the ``d``-dim vector added to the layer's input before its input norm (patched pass only).
        layer: the decoder layer whose attention is patched.
        heads: query heads whose output is taken from the patched pass (``None``: all).
        projections: ``{"q"|"k"|"v": KV groups or None (all)}``: which projections of which groups
            read the steered input in the patched pass (default: all of q, k and v, every group).
    """
    parts = model_parts(model)
    parts.check_layer(layer)
    block = parts.layers[layer]
    attn = block.self_attn
    hd, n_heads, n_kv = parts.head_dim, parts.n_heads, parts.n_kv_heads
    heads = list(range(n_heads)) if heads is None else sorted(set(heads))
    if any(not 0 <= h < n_heads for h in heads):
        raise ValueError(f"heads must lie in 0..{n_heads - 1}")
    projections = {"q": None, "k": None, "v": None} if projections is None else dict(projections)
    for name, groups in projections.items():
        if name not in _PROJ:
            raise ValueError(f"unknown projection {name!r}; use q, k or v")
        if groups is not None and any(not 0 <= g < n_kv for g in groups):
            raise ValueError(f"KV groups must lie in 0..{n_kv - 1}")
    full = all(projections.get(p, "absent") is None for p in _PROJ)
    need_vanilla = len(heads) < n_heads
    state: dict[str, Any] = {}
    o_proj = attn.o_proj
    orig_forward = attn.forward
    s = vector.detach()

    def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        state["h"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def proj_hook(name: str, groups: Sequence[int] | None):
        width = hd * parts.heads_per_group if name == "q" else hd

        def fn(m: nn.Module, _a: Any, out: torch.Tensor) -> torch.Tensor:
            steered = nn.functional.linear(state["x_st"], m.weight, m.bias)
            if groups is None:
                return steered
            out = out.clone()
            for g in groups:
                out[..., g * width : (g + 1) * width] = steered[..., g * width : (g + 1) * width]
            return out

        return fn

    def forward(*args: Any, **kwargs: Any):
        if "hidden_states" in kwargs:
            x_van = kwargs.pop("hidden_states")
        else:
            x_van, args = args[0], args[1:]
        state["x_st"] = block.input_layernorm(state["h"] + s.to(state["h"]))
        cache_key = "cache" if "cache" in kwargs else "past_key_values"
        attn.o_proj = nn.Identity()
        try:
            a_van = weights = None
            if need_vanilla:
                a_van, weights = orig_forward(*args, hidden_states=x_van, **kwargs)
                if kwargs.get(cache_key) is not None:
                    kwargs = {**kwargs, cache_key: _private_for(kwargs[cache_key])}
            hooks = (
                []
                if full
                else [getattr(attn, _PROJ[p]).register_forward_hook(proj_hook(p, g)) for p, g in projections.items()]
            )
            try:
                a_pat, w_pat = orig_forward(*args, hidden_states=state["x_st"] if full else x_van, **kwargs)
            finally:
                for hk in hooks:
                    hk.remove()
        finally:
            attn.o_proj = o_proj
        if a_van is None:
            return o_proj(a_pat), w_pat
        mixed = a_van.clone()
        for h in heads:
            mixed[..., h * hd : (h + 1) * hd] = a_pat[..., h * hd : (h + 1) * hd]
        return o_proj(mixed), weights

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    attn.forward = forward
    try:
        yield
    finally:
        handle.remove()
        del attn.forward  # back to the class's method
        attn.o_proj = o_proj
