"""What every decode loop shares: the rollout record, padding, seed hashing, token sampling, stops.

The two decode loops (:func:`steerlib.rollout.sample_rollouts`, the module loop with dynamic shapes, and
:func:`steerlib.static_decode.sample_rollouts_static`, fixed shapes for CUDA graphs) and the vLLM
backend build on these pieces and on nothing of each other, so a row drawn from a prompt's seed
(:func:`prompt_seed`, :func:`row_uniforms`) is the same token in either loop.

Example:
    >>> ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Rollouts", "left_pad", "cache_kwarg", "sample_token", "mix_seed", "row_uniforms", "prompt_seed",
           "trim_at_stop", "MIN_SHARED_PREFIX", "shared_prefix_length"]

#: A prompt prefix shorter than this is not worth a pass of its own (see :func:`shared_prefix_length`).
MIN_SHARED_PREFIX = 8


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


def shared_prefix_length(seqs: Sequence[Sequence[int]], minimum: int = MIN_SHARED_PREFIX) -> int:
    """The number of leading tokens every sequence shares (a system prompt, few-shot examples), at most
    one less than the shortest (each keeps a token of its own, whose logits the prefill needs), or 0
    when that is under ``minimum`` or there is only one sequence.

    Example:
        >>> shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]], minimum=2), shared_prefix_length([[1, 2]] * 2, 1)
        (3, 1)
    """
    if len(seqs) < 2:
        return 0
    first, limit = seqs[0], min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n if n >= minimum else 0


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


def mix_seed(x: torch.Tensor) -> torch.Tensor:
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
    x = mix_seed(mix_seed(x) ^ (index % _MOD))
    return int(x)


def row_uniforms(row_seeds: torch.Tensor, t: int) -> torch.Tensor:
    """One number in (0, 1) per row for decode step ``t``: a hash of the row's seed and ``t``, so a row's
    draws do not depend on the other rows of its batch.

    Example:
        >>> u = row_uniforms(torch.tensor([1, 2]), 0)
        >>> bool((u > 0).all() and (u < 1).all() and u[0] != u[1])
        True
    """
    x = mix_seed(mix_seed(row_seeds % _MOD) ^ (t % _MOD))
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
