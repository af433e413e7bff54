"""Where and how a steering vector enters a model: forward hooks inside a context manager.

A :class:`SteeringVector` says *what* is added (a ``d``-dim tensor, often an ``nn.Parameter``) and
*where*: a decoder layer ``l`` (0-based) and a site.

Sites (all relative to decoder layer ``l``):

- ``resid_post``: the output of layer ``l`` (the paper's injection point; identical to a bias on
  layer ``l``'s ``mlp.down_proj``).
- ``resid_pre``: the input of layer ``l`` (for ``l > 0`` the same as ``resid_post`` of ``l - 1``).
- ``post_attn``: after layer ``l``'s attention residual add, before its MLP. The vector trained at
  ``l - 1`` moved here is the paper's Skip-Attn.
- ``mlp_in``: added to the MLP input only (after ``post_attention_layernorm``), not to the residual.
- ``v_in`` / ``k_in`` / ``q_in``: added to the input of the value / key / query projection (after the
  input norm) of one KV group (``kv_group``; ``None`` = all groups) only. For ``q_in`` a KV group means
  the query heads that share that key/value head. Implemented exactly as ``W[group] @ s`` added to the
  projection's output slice, so other groups never see the vector.

Positions (``positions=``) are token columns of the (left-padded) batch: ``all`` (the paper's
default), ``prompt`` (columns before the prompt length), ``generated`` (from the prompt length on),
``first_generated`` (the first generated token's own column) and ``last_prompt`` (the last prompt
column, whose output *predicts* the first generated token). Columns are counted across
``model.generate`` calls with a KV cache (prefill, then one token per step). During ``generate`` the
prompt length is the prefill length; for a plain forward pass over prompt + completion, pass
``prompt_length``.

Routing: with ``routing=[g_0, ..., g_{B-1}]`` row ``b`` of every forward pass receives only the vectors
whose ``route`` equals ``g_b`` (``-1``: none), so one batch can carry a different layer's vector in each
row. Vectors with ``route=None`` reach every row.

Works with decoder layers that return a tensor (transformers 5) or a tuple (4.x).

Example:
    >>> vecs = zero_vectors(model, layers=[model.config.num_hidden_layers - 1])  # doctest: +SKIP
    >>> with steer(model, vecs, positions="all"):                               # doctest: +SKIP
    ...     out = model.generate(**batch, do_sample=True, max_new_tokens=32)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from steerlib.arch import ModelParts, model_parts, retuple, untuple

__all__ = [
    "Site",
    "Positions",
    "SITES",
    "POSITIONS",
    "SteeringVector",
    "SteeringHandle",
    "zero_vectors",
    "steer",
]

Site = Literal["resid_post", "resid_pre", "post_attn", "mlp_in", "v_in", "k_in", "q_in"]
Positions = Literal["all", "prompt", "generated", "first_generated", "last_prompt"]
SITES: tuple[str, ...] = get_args(Site)
POSITIONS: tuple[str, ...] = get_args(Positions)
_PROJ = {"v_in": "v_proj", "k_in": "k_proj", "q_in": "q_proj"}


@dataclass
class SteeringVector:
    """One vector and where it is added.

    Attributes:
        vector: shape ``(hidden_size,)``; an ``nn.Parameter`` when trained.
        layer: 0-based decoder layer.
        site: one of :data:`SITES`.
        kv_group: KV group for the projection sites (``None`` = every group).
        scale: multiplies the vector (the paper sweeps -1 ... 10).
        route: routing group; ``None`` = applied to every row.
    """

    vector: torch.Tensor
    layer: int
    site: Site = "resid_post"
    kv_group: int | None = None
    scale: float = 1.0
    route: int | None = None


def zero_vectors(
    model: nn.Module,
    layers: Sequence[int],
    site: Site = "resid_post",
    *,
    trainable: bool = True,
    dtype: torch.dtype = torch.float32,
    routed: bool = False,
) -> list[SteeringVector]:
    """Zero-initialised vectors, one per layer, on the model's device.

    Args:
        model: a supported causal LM.
        layers: 0-based layer indices.
        site: where each vector is added.
        trainable: wrap each tensor in an ``nn.Parameter`` with ``requires_grad=True``.
        dtype: parameter dtype (float32 keeps Adam exact on bf16 models).
        routed: set ``route=layer`` on each vector (for a multiplexed batch).

    Example:
        >>> vecs = zero_vectors(model, range(model.config.num_hidden_layers), routed=True)  # doctest: +SKIP
    """
    parts = model_parts(model)
    device = next(parts.causal_lm.parameters()).device
    out = []
    for layer in layers:
        parts.check_layer(layer)
        t = torch.zeros(parts.hidden_size, dtype=dtype, device=device)
        vec: torch.Tensor = nn.Parameter(t) if trainable else t
        out.append(SteeringVector(vec, layer, site, route=layer if routed else None))
    return out


class _Tracker:
    """Knows the absolute token columns of the current forward pass."""

    def __init__(self, prompt_length: int | torch.Tensor | None) -> None:
        self.explicit = prompt_length is not None
        self.prompt_length = prompt_length
        self.cols: torch.Tensor | None = None

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if x is None:
            raise RuntimeError("steerlib: cannot find input_ids/inputs_embeds to count positions")
        past = 0
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cache_position = kwargs.get("cache_position")
        if cache_position is not None:
            past = int(cache_position.reshape(-1)[0])
        elif cache is not None:
            if hasattr(cache, "get_seq_length"):
                past = int(cache.get_seq_length())
            elif isinstance(cache, (tuple, list)) and len(cache) and cache[0] is not None:
                past = int(cache[0][0].shape[-2])
        length = x.shape[1]
        self.cols = torch.arange(past, past + length, device=x.device)
        if past == 0 and not self.explicit:
            self.prompt_length = length

    def mask(self, positions: str, batch: int) -> torch.Tensor:
        if self.cols is None or self.prompt_length is None:
            raise RuntimeError("steerlib: positions are unknown outside a forward pass")
        p = self.prompt_length
        p = p.to(self.cols.device).reshape(-1, 1) if isinstance(p, torch.Tensor) else p
        cols = self.cols.reshape(1, -1)
        if positions == "prompt":
            m = cols < p
        elif positions == "generated":
            m = cols >= p
        elif positions == "first_generated":
            m = cols == p
        else:  # last_prompt
            m = cols == p - 1
        return m.expand(batch, -1).unsqueeze(-1)


class SteeringHandle:
    """The hooks of one :func:`steer` context. ``remove()`` is idempotent."""

    def __init__(
        self,
        parts: ModelParts,
        vectors: Sequence[SteeringVector],
        positions: Positions,
        scale: float,
        routing: torch.Tensor | None,
        prompt_length: int | torch.Tensor | None,
    ) -> None:
        self.parts = parts
        self.positions = positions
        self.scale = scale
        self.routing = routing
        self.tracker = _Tracker(prompt_length) if positions != "all" else None
        self._handles: list[Any] = []
        groups: dict[tuple[int, str], list[SteeringVector]] = {}
        for v in vectors:
            groups.setdefault((v.layer, v.site), []).append(v)
        self.groups = groups
        try:
            if self.tracker is not None:
                self._handles.append(parts.decoder.register_forward_pre_hook(self.tracker.pre_hook, with_kwargs=True))
            for (layer, site), entries in groups.items():
                self._register(layer, site, entries)
        except BaseException:
            self.remove()
            raise

    # -- the added tensor -------------------------------------------------------------------------
    def _delta(self, entries: list[SteeringVector], like: torch.Tensor, proj: nn.Linear | None):
        batch = like.shape[0]
        parts = self.parts

        def mapped(e: SteeringVector) -> torch.Tensor:
            v = e.vector.to(device=like.device, dtype=like.dtype) * (e.scale * self.scale)
            if proj is None:
                return v
            w = proj.weight
            if e.kv_group is None:
                return v @ w.T
            width = parts.head_dim * (parts.heads_per_group if e.site == "q_in" else 1)
            lo, hi = e.kv_group * width, (e.kv_group + 1) * width
            out = torch.zeros(w.shape[0], device=like.device, dtype=like.dtype)
            return torch.cat([out[:lo], v @ w[lo:hi].T, out[hi:]])

        if self.routing is None:
            delta = sum(mapped(e) for e in entries)
            delta = delta.reshape(1, 1, -1)
        else:
            if self.routing.shape[0] != batch:
                raise ValueError(f"routing has {self.routing.shape[0]} rows but the forward pass has {batch}")
            routing = self.routing.to(like.device)
            delta = torch.zeros(batch, like.shape[-1], device=like.device, dtype=like.dtype)
            for e in entries:
                rows = torch.ones_like(routing, dtype=torch.bool) if e.route is None else routing == e.route
                delta = delta + rows.unsqueeze(-1).to(like.dtype) * mapped(e)
            delta = delta.unsqueeze(1)
        if self.tracker is not None:
            delta = delta * self.tracker.mask(self.positions, batch).to(like.dtype)
        return delta

    def resid_delta(self, layer: int, like: torch.Tensor) -> torch.Tensor | None:
        """What the ``resid_post`` hooks of ``layer`` add to a ``(rows, 1, d)`` output ``like`` (the handle's
        current routing; ``None`` when no vector sits there). For a decode loop that runs the blocks itself
        (:mod:`steerlib.fastdecode`); only for ``positions="all"``."""
        if self.tracker is not None:
            raise ValueError("resid_delta needs positions='all'")
        entries = self.groups.get((layer, "resid_post"))
        return None if entries is None else self._delta(entries, like, None)

    # -- hooks ------------------------------------------------------------------------------------
    def _register(self, layer: int, site: str, entries: list[SteeringVector]) -> None:
        block = self.parts.layers[layer]
        if site == "resid_post":
            self._handles.append(block.register_forward_hook(self._out_hook(entries)))
        elif site == "post_attn":
            self._handles.append(block.self_attn.register_forward_hook(self._out_hook(entries)))
        elif site == "resid_pre":
            self._handles.append(
                block.register_forward_pre_hook(self._in_hook(entries, "hidden_states"), with_kwargs=True)
            )
        elif site == "mlp_in":
            self._handles.append(block.mlp.register_forward_pre_hook(self._in_hook(entries, "x"), with_kwargs=True))
        else:
            proj = getattr(block.self_attn, _PROJ[site])
            self._handles.append(proj.register_forward_hook(self._out_hook(entries, proj)))

    def _out_hook(self, entries: list[SteeringVector], proj: nn.Linear | None = None):
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            h = untuple(output)
            return retuple(output, h + self._delta(entries, h, proj))

        return hook

    def _in_hook(self, entries: list[SteeringVector], name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                h = args[0]
                return (h + self._delta(entries, h, None),) + tuple(args[1:]), kwargs
            key = name if name in kwargs else next(k for k, v in kwargs.items() if torch.is_tensor(v))
            h = kwargs[key]
            return args, {**kwargs, key: h + self._delta(entries, h, None)}

        return hook

    # -- following the KV cache's batch changes (steerlib.cachesync) -------------------------------
    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every routing row ``repeats`` times (a shared prefill expanded to its samples)."""
        if self.routing is not None:
            self.routing = self.routing.repeat_interleave(repeats, 0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the routing rows ``indices`` (finished rows leave the batch)."""
        if self.routing is not None:
            self.routing = self.routing[torch.as_tensor(indices).to(self.routing.device)]

    def remove(self) -> None:
        """Remove every hook this handle registered."""
        while self._handles:
            self._handles.pop().remove()


def _validate(parts: ModelParts, vectors: Sequence[SteeringVector], positions: str) -> None:
    if positions not in POSITIONS:
        raise ValueError(f"unknown positions {positions!r}; choose one of {', '.join(POSITIONS)}")
    for v in vectors:
        if v.site not in SITES:
            raise ValueError(f"unknown site {v.site!r}; choose one of {', '.join(SITES)}")
        parts.check_layer(v.layer)
        if tuple(v.vector.shape) != (parts.hidden_size,):
            raise ValueError(
                f"vector for layer {v.layer} has shape {tuple(v.vector.shape)}, "
                f"the model's hidden size is {parts.hidden_size}"
            )
        if v.kv_group is not None:
            if v.site not in _PROJ:
                raise ValueError(f"kv_group only applies to the sites {', '.join(_PROJ)}")
            if not 0 <= v.kv_group < parts.n_kv_groups:
                raise ValueError(f"kv_group {v.kv_group} out of range: the model has {parts.n_kv_groups} KV groups")


@contextmanager
def steer(
    model: nn.Module,
    vectors: Sequence[SteeringVector] | SteeringVector,
    *,
    positions: Positions = "all",
    scale: float = 1.0,
    routing: Sequence[int] | torch.Tensor | None = None,
    prompt_length: int | Sequence[int] | torch.Tensor | None = None,
) -> Iterator[SteeringHandle]:
    """Add steering vectors to a model for the duration of a ``with`` block.

    Hooks are removed on exit, also when the block raises.

    Args:
        model: a supported causal LM (Qwen2/Llama/Mistral style, optionally PEFT-wrapped).
        vectors: one or more :class:`SteeringVector`.
        positions: which token columns receive the vectors (see the module docstring).
        scale: a global factor on every vector.
        routing: per-row routing group (``-1`` = no vector) for every forward pass in the block.
        prompt_length: prompt columns (int, or one per row); inferred from the prefill during
            ``generate`` when omitted.

    Yields:
        The :class:`SteeringHandle`.

    Example:
        >>> with steer(model, SteeringVector(vec, layer=5)):  # doctest: +SKIP
        ...     logits = model(input_ids).logits
    """
    parts = model_parts(model)
    vecs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    _validate(parts, vecs, positions)
    route_t = None
    if routing is not None:
        route_t = torch.as_tensor(routing, dtype=torch.long).reshape(-1)
    elif any(v.route is not None for v in vecs):
        raise ValueError("some vectors carry a route but no routing was given")
    if prompt_length is not None and not isinstance(prompt_length, (int, torch.Tensor)):
        prompt_length = torch.as_tensor(list(prompt_length), dtype=torch.long)
    handle = SteeringHandle(parts, vecs, positions, scale, route_t, prompt_length)
    try:
        yield handle
    finally:
        handle.remove()
