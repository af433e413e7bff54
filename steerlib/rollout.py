"""Rollouts for RL: K samples per prompt with one shared prompt prefill, finished rows dropped.

``sample_rollouts`` prefills each prompt once, copies its KV cache K times
(``cache.batch_repeat_interleave``), then decodes one token per step for the rows still running:
a row that emits EOS leaves the batch (``cache.batch_select_indices``) and costs no more decode work.
On a CPU, narrow models (the organisms) decode through :mod:`steerlib.fastdecode` (the same draws, fewer
ops per step) unless hooks of other analyses are on the model.
With ``shared_prefix=True`` the tokens every prompt starts with (a system prompt, few-shot examples;
:func:`steerlib.sampling.shared_prefix_length`) are prefilled once, their KV cache expanded (not
recomputed) to every prompt, and each prompt's own tokens prefilled after it; the rows are then laid
out prefix, padding, own tokens (the padding masked, positions counted over real tokens), which the
loss pass reads as it reads left padding (with routing, the prefix runs once per routing group, since
a vector inside it changes its cache). Steering (any site, position mask and per-prompt routing of
:mod:`steerlib.steering`) is applied during prefill and decoding, so the samples are on-policy; a
shared prefix needs ``positions="all"`` when steering. Everything runs under ``torch.inference_mode``.

With ``capture=`` (one decoder block per prompt) the hidden state entering that block is kept for every
prompt and completion column (:attr:`Rollouts.hidden`): the activations below the first steered block do
not depend on the vector, so the loss pass can start there (:func:`steerlib.rloo.RLOOTrainer.update`).

Example:
    >>> ro = sample_rollouts(model, [[5, 6, 7]], k=4, eos_id=1, pad_id=0, max_new_tokens=8)  # doctest: +SKIP
    >>> ro.completion_ids.shape                                                              # doctest: +SKIP
    torch.Size([4, 8])
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from steerlib.cachesync import follow
from steerlib.sampling import (Rollouts, cache_kwarg, left_pad, mix_seed, row_uniforms, sample_token,
                               shared_prefix_length, trim_at_stop)
from steerlib.steering import Positions, SteeringVector, steer

__all__ = ["sample_rollouts", "sample_rollouts_chunked"]


class _Capture:
    """Forward pre-hooks that keep the hidden state entering each row's block (prefill, then one column
    per decode step). The hooks run before any steering hook on the same block (``prepend``)."""

    def __init__(self, layers: Any, blocks: torch.Tensor, k: int, width: int, new: int) -> None:
        self.blocks, self.k = blocks, k  # blocks: one per prompt
        self.row_blocks = blocks.repeat_interleave(k)  # one per sample row (decode steps index it)
        self.prefill: torch.Tensor | None = None
        self.decode: torch.Tensor | None = None
        self.width, self.new = width, new
        self.rows: torch.Tensor | None = None  # None: the prefill (rows are prompts); else row ids
        self.offset = 0  # the first column of the current prefill pass
        self.prefix_rows: torch.Tensor | None = None  # in a shared prefix's pass: the row of each prompt
        self.col = 0
        self.handles = [layers[int(b)].register_forward_pre_hook(self._hook(int(b)), with_kwargs=True, prepend=True)
                        for b in blocks.unique().tolist()]

    def _hook(self, block: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            if self.rows is None:  # a prefill pass: the shared prefix (one row, expanded) or the prompts
                n = len(self.blocks)
                if self.prefill is None:
                    self.prefill = h.new_zeros(n, self.width, h.shape[-1])
                    self.decode = h.new_zeros(n * self.k, self.new, h.shape[-1])
                mine = (self.blocks == block).nonzero().flatten()
                rows = h if self.prefix_rows is None else h[self.prefix_rows]  # each prompt's prefix row
                self.prefill[mine, self.offset : self.offset + h.shape[1]] = rows[mine]
            else:
                mine = (self.row_blocks[self.rows] == block).nonzero().flatten()
                self.decode[self.rows[mine], self.col] = h[mine, -1]  # type: ignore[index]
        return hook

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        assert self.prefill is not None and self.decode is not None
        hidden = torch.cat([self.prefill.repeat_interleave(self.k, 0), self.decode], 1)
        return hidden, self.row_blocks


@torch.inference_mode()
def sample_rollouts(
    model: Any,
    prompts: Sequence[Sequence[int]],
    k: int,
    *,
    eos_id: int | Sequence[int],
    pad_id: int,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    vectors: Sequence[SteeringVector] | None = None,
    routes: Sequence[int] | None = None,
    positions: Positions = "all",
    generator: torch.Generator | None = None,
    capture: Sequence[int] | None = None,
    prompt_seeds: Sequence[int] | None = None,
    fast: bool | None = None,
    shared_prefix: bool = False,
) -> Rollouts:
    """Sample ``k`` completions for each prompt (token ids) under optional steering.

    Args:
        eos_id: the stop token id, or several (a chat turn ends at its end-of-turn token); the stop
            token is kept in the completion and its mask.
        routes: one routing group per *prompt* (its ``k`` samples share it).
        generator: the sampling RNG (on the model's device).
        capture: one decoder block per prompt: keep the hidden state entering it (:class:`Rollouts`).
        prompt_seeds: one sampling seed per prompt (:func:`prompt_seed`); its ``k`` samples draw from it
            (:func:`row_uniforms`), so a prompt's completions do not depend on the batch it is in.
            ``None``: one ``generator`` for the whole batch.
        fast: decode with :func:`steerlib.fastdecode.decode` (the same draws, fewer ops; CPU only);
            ``None``: where :func:`steerlib.fastdecode.blocker` allows it and it pays (narrow models).
        shared_prefix: prefill the prompts' common leading tokens once per routing group (module
            docstring); ignored under a position mask, or when the prompts share fewer than
            :data:`~steerlib.sampling.MIN_SHARED_PREFIX` tokens.
    """
    from transformers import DynamicCache

    from steerlib import fastdecode

    # checked before this call adds hooks of its own
    why_not = fastdecode.blocker(model, vectors, positions) if fast is not False else "fast=False"
    if fast and why_not is not None:
        raise ValueError(f"fast decoding is not possible here: {why_not}")
    fast = why_not is None and fastdecode.pays(model) if fast is None else fast

    device = next(model.parameters()).device
    # a position mask would take the prefix's pass for the prompt; every other steering is one per group
    shared = shared_prefix_length(prompts) if shared_prefix and (not vectors or positions == "all") else 0
    ids, mask = left_pad([p[shared:] for p in prompts], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    head = torch.as_tensor(list(prompts[0][:shared]), dtype=torch.long, device=device)[None]
    n_prompts = ids.shape[0]
    prompt_ids = torch.cat([head.expand(n_prompts, -1), ids], 1)
    prompt_mask = torch.cat([torch.ones_like(head).expand(n_prompts, -1), mask], 1)
    stops = torch.as_tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=device)
    pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    key = cache_kwarg(model)
    routing = torch.as_tensor(list(routes), dtype=torch.long) if routes is not None else None
    ctx: Any = contextlib.nullcontext(None)
    if vectors:
        ctx = steer(model, vectors, positions=positions, routing=routing)
    out_tokens = torch.full((n_prompts * k, max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(n_prompts * k, dtype=torch.bool, device=device)
    cap = None
    if capture is not None:
        from steerlib.arch import model_parts

        cap = _Capture(model_parts(model).layers, torch.as_tensor(list(capture), device=device), k,
                       prompt_ids.shape[1], max_new_tokens)
    with ctx as handle:
        if handle is not None:
            follow(cache, handle)
        if shared:  # the common prefix once per routing group, its cache then expanded to every prompt
            rows = torch.zeros(n_prompts, dtype=torch.long, device=device)
            if handle is not None and handle.routing is not None:
                handle.routing, rows = handle.routing.unique(return_inverse=True)
                rows = rows.to(device)
            if cap is not None:
                cap.prefix_rows = rows
            n_rows = int(rows.max()) + 1
            model(input_ids=head.expand(n_rows, -1), position_ids=pos[:n_rows, :shared], use_cache=True,
                  logits_to_keep=1, **{key: cache})
            cache.batch_select_indices(rows)  # the routing follows: one row per prompt again
            if cap is not None:
                cap.offset, cap.prefix_rows = shared, None
        logits = model(
            input_ids=ids, attention_mask=prompt_mask, position_ids=pos[:, shared:], use_cache=True, logits_to_keep=1,
            **{key: cache},
        ).logits[:, -1]  # only the last position's logits: the prefill never holds batch x prompt x vocab
        cache.batch_repeat_interleave(k)  # the steering handle's routing follows (cachesync)
        logits = logits.repeat_interleave(k, 0)
        mask = prompt_mask.repeat_interleave(k, 0)
        last = pos[:, -1].repeat_interleave(k, 0)
        active = torch.arange(n_prompts * k, device=device)
        row_seeds = None
        if prompt_seeds is not None:
            base = torch.as_tensor(list(prompt_seeds), dtype=torch.long, device=device).repeat_interleave(k)
            row_seeds = mix_seed(base ^ torch.arange(k, device=device).repeat(n_prompts))

        def sample(lg: torch.Tensor, rows: torch.Tensor, t: int) -> torch.Tensor:
            u = row_uniforms(row_seeds[rows], t) if row_seeds is not None else None
            return sample_token(lg, temperature, top_p, generator, u)

        if fast:
            fastdecode.decode(model, cache, logits, mask, last, out_tokens=out_tokens, finished=finished, stops=stops,
                              sample=sample, handle=handle,
                              capture=None if cap is None else (cap.row_blocks, cap.decode))  # type: ignore[arg-type]
        else:
            for t in range(max_new_tokens):
                tok = sample(logits, active, t)
                out_tokens[active, t] = tok
                done = torch.isin(tok, stops)
                finished[active[done]] = True
                if t == max_new_tokens - 1 or bool(done.all()):
                    break
                if bool(done.any()):
                    keep = (~done).nonzero().flatten()
                    cache.batch_select_indices(keep)
                    active, tok, mask, last = active[keep], tok[keep], mask[keep], last[keep]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                last = last + 1
                if cap is not None:
                    cap.rows, cap.col = active, t
                logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=last[:, None], use_cache=True,
                               **{key: cache}).logits[:, -1]
    out_tokens, comp_mask = trim_at_stop(out_tokens, stops, pad_id)
    hidden, blocks = cap.result() if cap is not None else (None, None)
    return Rollouts(
        prompt_ids=prompt_ids.repeat_interleave(k, 0),
        prompt_mask=prompt_mask.repeat_interleave(k, 0),
        completion_ids=out_tokens,
        completion_mask=comp_mask,
        prompt_index=torch.arange(n_prompts, device=device).repeat_interleave(k),
        finished=finished,
        hidden=hidden,
        hidden_block=blocks,
    )


def sample_rollouts_chunked(
    model: Any,
    prompts: Sequence[Sequence[int]],
    k: int,
    *,
    kv_tokens: int,
    logit_elements: int = 1 << 62,
    max_new_tokens: int = 64,
    routes: Sequence[int] | None = None,
    capture: Sequence[int] | None = None,
    prompt_seeds: Sequence[int] | None = None,
    pad_id: int,
    static: bool = False,
    **kwargs: Any,
) -> Rollouts:
    """:func:`sample_rollouts` over consecutive chunks of prompts, each chunk's KV cache at most
    ``kv_tokens`` tokens (rows x (prompt + completion) width) and each decode step's logits at most
    ``logit_elements`` (rows x vocabulary); the parts are concatenated. One chunk when everything fits,
    which is then exactly :func:`sample_rollouts`. ``static``: each chunk with
    :func:`steerlib.static_decode.sample_rollouts_static` (fixed shapes; CUDA graphs on a GPU).
    """
    from steerlib.arch import model_parts
    from steerlib.static_decode import sample_rollouts_static

    width = max(len(p) for p in prompts) + max_new_tokens
    vocab = model_parts(model).lm_head.weight.shape[0]
    per_chunk = max(1, min(kv_tokens // (k * width), logit_elements // (k * vocab)))
    sampler = sample_rollouts_static if static else sample_rollouts
    if static:
        kwargs.pop("shared_prefix", None)  # the fixed-shape loop prefills whole prompts
    parts = []
    for lo in range(0, len(prompts), per_chunk):
        sel = slice(lo, lo + per_chunk)
        parts.append(sampler(model, prompts[sel], k, max_new_tokens=max_new_tokens, pad_id=pad_id,
                             routes=None if routes is None else list(routes)[sel],
                             capture=None if capture is None else list(capture)[sel],
                             prompt_seeds=None if prompt_seeds is None else list(prompt_seeds)[sel], **kwargs))
    return Rollouts.cat(parts, pad_id)
