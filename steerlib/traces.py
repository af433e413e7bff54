"""Teacher-forced passes over prompt + completion, with and without steering, recording activations.

The analyses of chapters 03-05 and 08 all need the same thing: a batch of (prompt, completion)
token sequences run through the model once unsteered and once steered, and some internal activation
(a decoder layer's output, the logits, an attention pattern) compared token by token. This module
lays the sequences out (left padding, positions from the attention mask), iterates over them in
mini-batches and records module outputs through forward hooks that a context manager removes.

Layout of a batch of width ``T``: row ``b`` holds its ``seq_len[b]`` real tokens in the last columns;
its completion starts at column ``T - seq_len[b] + prompt_len[b]``; the logits at column ``c``
predict the token at ``c + 1``, so the first completion token is predicted at ``gen_start - 1``.

Paired traces: :func:`paired` runs every mini-batch unsteered and steered and yields both sides'
activations at named *read sites* side by side, ``(site, layer)`` with the steering sites' names
(``resid_pre``, ``post_attn``, ``mlp_in``, ``resid_post``) plus ``mlp_out`` (the MLP's output) and
``("logits", None)``. The analyses that compare base and steered activations (persistence, DiffSAE,
explained share, MLP shift, next-token shift) are built on it.

Example:
    >>> forced = encode_pairs(tok, prompts, [c.token_ids for c in completions])   # doctest: +SKIP
    >>> for batch in forced.batches(64):                                           # doctest: +SKIP
    ...     with record(model, {"l5": layers[5]}) as out:
    ...         logits = run(model, batch)
    ...     h5 = out["l5"]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlib.arch import model_parts, retuple, untuple

__all__ = [
    "Forced",
    "encode_pairs",
    "record",
    "run",
    "layer_modules",
    "ReadSite",
    "record_sites",
    "Paired",
    "paired",
    "add_to_output",
    "sample_forced",
]


@dataclass
class Forced:
    """Left-padded prompt + completion sequences.

    Attributes:
        ids: ``(B, T)`` token ids.
        mask: ``(B, T)`` attention mask.
        prompt_len: prompt tokens per row.
        seq_len: prompt + completion tokens per row.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    prompt_len: list[int]
    seq_len: list[int]

    @property
    def width(self) -> int:
        """Columns ``T``."""
        return int(self.ids.shape[1])

    def start(self, b: int) -> int:
        """First real column of row ``b``."""
        return self.width - self.seq_len[b]

    def gen_start(self, b: int) -> int:
        """Column of row ``b``'s first completion token."""
        return self.start(b) + self.prompt_len[b]

    def real_mask(self) -> torch.Tensor:
        """``(B, T)`` bool: real (non-pad) tokens."""
        return self.mask.bool()

    def generated_mask(self) -> torch.Tensor:
        """``(B, T)`` bool: completion tokens."""
        cols = torch.arange(self.width).unsqueeze(0)
        starts = torch.tensor([self.gen_start(b) for b in range(len(self.seq_len))]).unsqueeze(1)
        return cols >= starts

    def batches(self, size: int) -> Iterator[Forced]:
        """Mini-batches of at most ``size`` rows (each trimmed to its own width)."""
        for lo in range(0, len(self.seq_len), size):
            sl = self.seq_len[lo : lo + size]
            w = max(sl)
            yield Forced(
                self.ids[lo : lo + size, -w:], self.mask[lo : lo + size, -w:], self.prompt_len[lo : lo + size], sl
            )


def encode_pairs(tokenizer: Any, prompts: Sequence[str], completions: Sequence[Sequence[int]]) -> Forced:
    """Tokenise prompts (no special tokens added) and append completion ids; left-pad the result."""
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    seqs = [list(p) + list(c) for p, c in zip(p_ids, completions)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return Forced(ids, mask, [len(p) for p in p_ids], [len(s) for s in seqs])


def layer_modules(model: nn.Module) -> dict[int, nn.Module]:
    """Decoder layer index -> module (its output is the residual stream after the layer)."""
    return dict(enumerate(model_parts(model).layers))


@contextmanager
def record(model: nn.Module, modules: dict[Any, nn.Module]) -> Iterator[dict[Any, torch.Tensor]]:
    """Record the (first) output tensor of each module on every forward pass in the block.

    Hooks are registered last, so they see what other hooks (e.g. steering) already added. The
    dict maps each key to the output of the *last* forward pass.
    """
    out: dict[Any, torch.Tensor] = {}
    handles = []

    def hook(key: Any):
        def fn(_m: nn.Module, _a: Any, o: Any) -> None:
            out[key] = untuple(o).detach()

        return fn

    for key, mod in modules.items():
        handles.append(mod.register_forward_hook(hook(key)))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def run(model: nn.Module, batch: Forced, **kwargs: Any) -> torch.Tensor:
    """One forward pass over a batch (positions from the mask, no cache); logits in >= float32."""
    device = next(model.parameters()).device
    pos = (batch.mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=batch.ids.to(device),
        attention_mask=batch.mask.to(device),
        position_ids=pos.to(device),
        use_cache=False,
        **kwargs,
    )
    return out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))


ReadSite = tuple[Literal["resid_pre", "post_attn", "mlp_in", "mlp_out", "resid_post", "logits"], "int | None"]


@contextmanager
def record_sites(model: nn.Module, sites: Sequence[ReadSite]) -> Iterator[dict[ReadSite, torch.Tensor]]:
    """Record the residual stream (or MLP output) at ``sites`` on every forward pass in the block.

    ``post_attn`` is the block's input plus its attention output (where a ``post_attn`` vector is
    added); ``mlp_in`` is the MLP's input (after the post-attention norm). Hooks are registered last,
    so steering added at the same site is included. ``("logits", None)`` is not recorded here (use the
    return value of :func:`run`).
    """
    blocks = model_parts(model).layers
    out: dict[ReadSite, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}
    handles = []

    def block_pre(layer: int):
        def fn(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            h = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).detach()
            seen[layer] = h
            if ("resid_pre", layer) in sites:
                out[("resid_pre", layer)] = h

        return fn

    def after(site: ReadSite):
        def fn(_m: nn.Module, args: tuple, kwargs: dict, o: Any) -> None:
            if site[0] == "mlp_in":
                o = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
            h = untuple(o).detach()
            out[site] = seen[site[1]] + h if site[0] == "post_attn" else h  # type: ignore[index]

        return fn

    try:
        for site in sites:
            name, layer = site
            if name == "logits":
                continue
            if name not in ("resid_pre", "post_attn", "mlp_in", "mlp_out", "resid_post") or layer is None:
                raise ValueError(f"unknown read site {site!r}")
            block = blocks[layer]
            if layer not in seen:
                seen[layer] = torch.empty(0)
                handles.append(block.register_forward_pre_hook(block_pre(layer), with_kwargs=True))
            module = {"post_attn": block.self_attn, "mlp_in": block.mlp, "mlp_out": block.mlp}.get(name, block)
            if name != "resid_pre":
                handles.append(module.register_forward_hook(after(site), with_kwargs=True))
        yield out
    finally:
        for h in handles:
            h.remove()


@dataclass
class Paired:
    """One mini-batch run unsteered and steered: activations at the requested sites, aligned."""

    batch: Forced
    base: dict[ReadSite, torch.Tensor]
    steered: dict[ReadSite, torch.Tensor]

    def delta(self, site: ReadSite) -> torch.Tensor:
        """Steered minus base at ``site`` (float32, on the model's device)."""
        return self.steered[site].float() - self.base[site].float()


@torch.no_grad()
def paired(
    model: nn.Module, forced: Forced, vectors: Sequence[Any], sites: Sequence[ReadSite], *, batch_size: int = 64
) -> Iterator[Paired]:
    """Yield every mini-batch of ``forced`` run without and with ``vectors``, activations at ``sites``.

    Example:
        >>> for pb in paired(model, forced, [v5], [("resid_post", 5), ("logits", None)]):  # doctest: +SKIP
        ...     d = pb.delta(("resid_post", 5))
    """
    from steerlib.steering import steer

    sites = list(sites)
    want_logits = ("logits", None) in sites
    for batch in forced.batches(batch_size):
        sides = []
        for vecs in ([], list(vectors)):
            with steer(model, vecs), record_sites(model, sites) as out:
                # without a logits site only the last position is unembedded: never batch x T x vocab
                logits = run(model, batch, **({} if want_logits else {"logits_to_keep": 1}))
                side = dict(out)
            if want_logits:
                side[("logits", None)] = logits
            sides.append(side)
        yield Paired(batch, sides[0], sides[1])


@contextmanager
def add_to_output(model: nn.Module, layer: int, delta: torch.Tensor) -> Iterator[None]:
    """Add a ``(B, T, d)`` tensor to decoder layer ``layer``'s output (one batch shape) in the block."""

    def hook(_m: nn.Module, _a: Any, out: Any) -> Any:
        h = untuple(out)
        return retuple(out, h + delta.to(h))

    handle = model_parts(model).layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def sample_forced(model: nn.Module, tokenizer: Any, prompts: Sequence[str], vectors: Sequence[Any] = (), *,
                  max_new_tokens: int = 64, seed: int = 0) -> Forced:
    """Sample one completion per prompt (with ``vectors`` if given) and lay prompt + completion out for
    teacher forcing: the input of the paired analyses.

    Example:
        >>> forced = sample_forced(model, tok, prompts, [v5], max_new_tokens=64)   # doctest: +SKIP
    """
    from steerlib.evaluate import generate

    comps = generate(model, tokenizer, prompts, vectors=list(vectors) or None, max_new_tokens=max_new_tokens,
                     seed=seed)
    return encode_pairs(tokenizer, prompts, [c.token_ids for c in comps])
