"""Teacher-forced passes over prompt + completion, with and without steering, recording activations.

The analyses of chapters 03-05 and 08 all need the same thing: a batch of (prompt, completion)
token sequences run through the model once unsteered and once steered, and some internal activation
(a decoder layer's output, the logits, an attention pattern) compared token by token. This module
lays the sequences out (left padding, positions from the attention mask), iterates over them in
mini-batches and records module outputs through forward hooks that a context manager removes.

Layout of a batch of width ``T``: row ``b`` holds its ``seq_len[b]`` real tokens in the last columns;
its completion starts at column ``T - seq_len[b] + prompt_len[b]``; the logits at column ``c``
predict the token at ``c + 1``, so the first completion token is predicted at ``gen_start - 1``.

Example:
    >>> forced = encode_pairs(tok, prompts, [c.token_ids for c in completions])   # doctest: +SKIP
    >>> for batch in forced.batches(64):                                           # doctest: +SKIP
    ...     with record(model, {"l5": layers[5]}) as out:
    ...         logits = run(model, batch)
    ...     h5 = out["l5"]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlib.arch import model_parts

__all__ = ["Forced", "encode_pairs", "record", "run", "layer_modules"]


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
            yield Forced(self.ids[lo : lo + size, -w:], self.mask[lo : lo + size, -w:],
                         self.prompt_len[lo : lo + size], sl)


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
            out[key] = (o[0] if isinstance(o, tuple) else o).detach()
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
    out = model(input_ids=batch.ids.to(device), attention_mask=batch.mask.to(device),
                position_ids=pos.to(device), use_cache=False, **kwargs)
    return out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))
