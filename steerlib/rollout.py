"""Rollouts for RL: K samples per prompt with one shared prompt prefill, finished rows dropped.

``sample_rollouts`` prefills each prompt once, copies its KV cache K times
(``cache.batch_repeat_interleave``), then decodes one token per step for the rows still running:
a row that emits EOS leaves the batch (``cache.batch_select_indices``) and costs no more decode work.
On a CPU, narrow models (the organisms) decode through :mod:`steerlib.fastdecode` (the same draws, fewer
ops per step) unless hooks of other analyses are on the model.
Steering (any site, position mask and per-prompt routing of :mod:`steerlib.steering`) is applied during
prefill and decoding, so the samples are on-policy. Everything runs under ``torch.inference_mode``.

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
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerlib.cachesync import follow
from steerlib.steering import Positions, SteeringVector, steer

__all__ = ["Rollouts", "left_pad", "cache_kwarg", "sample_token", "row_uniforms", "prompt_seed", "trim_at_stop",
           "sample_rollouts", "sample_rollouts_chunked"]


@dataclass
class Rollouts:
    """``P * K`` rows, prompt ``i``'s samples at rows ``i*K ... i*K+K-1``.

    Attributes:
        prompt_ids, prompt_mask: ``(N, T)`` left-padded prompts (one copy per row).
        completion_ids, completion_mask: ``(N, M)`` right-padded completions; the mask covers the
            generated tokens up to and including EOS.
        prompt_index: ``(N,)`` index of each row's prompt.
        finished: ``(N,)`` whether the row emitted EOS.
        hidden: ``(N, T + M, d)`` the hidden state entering block ``hidden_block[i]`` at every column of
            row ``i`` (zeros at padding and at the last completion token, which is never fed back), or
            ``None`` when not captured.
        hidden_block: ``(N,)`` the block each row's ``hidden`` enters (``None`` with ``hidden``).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_index: torch.Tensor
    finished: torch.Tensor
    hidden: torch.Tensor | None = None
    hidden_block: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        """Generated tokens per row (EOS included)."""
        return self.completion_mask.sum(-1)

    @staticmethod
    def cat(parts: Sequence[Rollouts], pad_id: int) -> Rollouts:
        """Rows of several rollouts in order (prompts re-left-padded to one width; prompt indices
        offset so that they keep counting prompts across the parts)."""
        if len(parts) == 1:
            return parts[0]
        width = max(p.prompt_ids.shape[1] for p in parts)

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

        hidden = None
        if all(p.hidden is not None for p in parts):
            hidden = torch.cat([torch.nn.functional.pad(p.hidden, (0, 0, width - p.prompt_ids.shape[1], 0))
                                for p in parts])  # type: ignore[arg-type]
        offsets, total = [], 0
        for p in parts:
            offsets.append(total)
            total += int(p.prompt_index.max()) + 1 if len(p.prompt_index) else 0
        return Rollouts(
            prompt_ids=torch.cat([pad(p.prompt_ids, pad_id) for p in parts]),
            prompt_mask=torch.cat([pad(p.prompt_mask, 0) for p in parts]),
            completion_ids=torch.cat([p.completion_ids for p in parts]),
            completion_mask=torch.cat([p.completion_mask for p in parts]),
            prompt_index=torch.cat([p.prompt_index + o for p, o in zip(parts, offsets)]),
            finished=torch.cat([p.finished for p in parts]),
            hidden=hidden,
            hidden_block=torch.cat([p.hidden_block for p in parts]) if hidden is not None else None,  # type: ignore[misc]
        )


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
        self.col = 0
        self.handles = [layers[int(b)].register_forward_pre_hook(self._hook(int(b)), with_kwargs=True, prepend=True)
                        for b in blocks.unique().tolist()]

    def _hook(self, block: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            if self.rows is None:
                if self.prefill is None:
                    self.prefill = h.new_zeros(h.shape[0], self.width, h.shape[-1])
                    self.decode = h.new_zeros(h.shape[0] * self.k, self.new, h.shape[-1])
                mine = (self.blocks == block).nonzero().flatten()
                self.prefill[mine] = h[mine]
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


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids, attention_mask)``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def cache_kwarg(model: Any) -> str:
    """``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier), as the forward accepts."""
    try:
        from steerlib.arch import model_parts

        model = model_parts(model).causal_lm  # look through PEFT wrappers (their forward takes **kwargs)
    except Exception:  # noqa: BLE001
        pass
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None,
                 uniforms: torch.Tensor | None = None):
    """Sample one token per row from ``logits`` (greedy when ``temperature == 0``): from ``generator``, or,
    given one uniform number per row (``uniforms``), by inverting each row's cumulative distribution."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    if uniforms is not None:
        cdf = probs.cumsum(-1)
        picked = torch.searchsorted(cdf, (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
        return picked.clamp(max=probs.shape[-1] - 1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


_MOD = 1 << 31


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Three rounds of a 31-bit multiplicative hash (products stay below 2^62: no int64 overflow)."""
    for _ in range(3):
        x = (x * 1103515245 + 12345) % _MOD
        x = x ^ (x >> 13)
    return x


def prompt_seed(run_seed: int, step: int, index: int) -> int:
    """The sampling seed of one prompt: from the run's seed, the step and the prompt's index in the
    step's draw, never from which process or batch it lands in.

    Example:
        >>> prompt_seed(0, 3, 5) == prompt_seed(0, 3, 5) != prompt_seed(0, 3, 6)
        True
    """
    x = torch.tensor([(run_seed * 1_000_003 + step) % _MOD], dtype=torch.long)
    x = _mix(_mix(x) ^ (index % _MOD))
    return int(x)


def row_uniforms(row_seeds: torch.Tensor, t: int) -> torch.Tensor:
    """One number in (0, 1) per row for decode step ``t``: a hash of the row's seed and ``t``, so a row's
    draws do not depend on the other rows of its batch.

    Example:
        >>> u = row_uniforms(torch.tensor([1, 2]), 0)
        >>> bool((u > 0).all() and (u < 1).all() and u[0] != u[1])
        True
    """
    x = _mix(_mix(row_seeds % _MOD) ^ (t % _MOD))
    return (x.double() + 0.5) / _MOD


def trim_at_stop(tokens: torch.Tensor, stops: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled ``(rows, M)`` tokens cut after each row's first stop token: ``(tokens, mask)``, padding
    after the stop and a mask over the tokens up to and including it (all ``M`` when no stop).

    Example:
        >>> trim_at_stop(torch.tensor([[5, 2, 7], [5, 6, 7]]), torch.tensor([2]), 0)
        (tensor([[5, 2, 0],
                [5, 6, 7]]), tensor([[1, 1, 0],
                [1, 1, 1]]))
    """
    is_stop = torch.isin(tokens, stops)
    last = torch.where(is_stop.any(-1), is_stop.float().argmax(-1).long(),
                       torch.full_like(tokens[:, 0], tokens.shape[1] - 1))
    mask = (torch.arange(tokens.shape[1], device=tokens.device)[None] <= last[:, None]).long()
    return torch.where(mask.bool(), tokens, torch.full_like(tokens, pad_id)), mask


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
    """
    from transformers import DynamicCache

    from steerlib import fastdecode

    # checked before this call adds hooks of its own
    why_not = fastdecode.blocker(model, vectors, positions) if fast is not False else "fast=False"
    if fast and why_not is not None:
        raise ValueError(f"fast decoding is not possible here: {why_not}")
    fast = why_not is None and fastdecode.pays(model) if fast is None else fast

    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    n_prompts = ids.shape[0]
    prompt_ids, prompt_mask = ids, mask
    stops = torch.as_tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
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

        cap = _Capture(model_parts(model).layers, torch.as_tensor(list(capture), device=device), k, ids.shape[1],
                       max_new_tokens)
    with ctx as handle:
        if handle is not None:
            follow(cache, handle)
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **{key: cache}
        ).logits[:, -1]  # only the last position's logits: the prefill never holds batch x prompt x vocab
        cache.batch_repeat_interleave(k)  # the steering handle's routing follows (cachesync)
        logits = logits.repeat_interleave(k, 0)
        mask = mask.repeat_interleave(k, 0)
        last = pos[:, -1].repeat_interleave(k, 0)
        active = torch.arange(n_prompts * k, device=device)
        row_seeds = None
        if prompt_seeds is not None:
            base = torch.as_tensor(list(prompt_seeds), dtype=torch.long, device=device).repeat_interleave(k)
            row_seeds = _mix(base ^ torch.arange(k, device=device).repeat(n_prompts))

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
    parts = []
    for lo in range(0, len(prompts), per_chunk):
        sel = slice(lo, lo + per_chunk)
        parts.append(sampler(model, prompts[sel], k, max_new_tokens=max_new_tokens, pad_id=pad_id,
                             routes=None if routes is None else list(routes)[sel],
                             capture=None if capture is None else list(capture)[sel],
                             prompt_seeds=None if prompt_seeds is None else list(prompt_seeds)[sel], **kwargs))
    return Rollouts.cat(parts, pad_id)
