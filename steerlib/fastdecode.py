"""A lean decode loop for rollouts on a CPU: the same samples as the module-by-module loop, fewer ops.

A decode step of a small model on a CPU is bound by per-op cost, not arithmetic: through the Hugging Face
modules the 96-wide organism's KV cache grows by concatenation at every step, masks are rebuilt and every
module dispatches. :func:`decode` runs the same blocks on the same weights with fewer and larger ops: one
matmul for the query, key and value projections and one for gate and up (the weights concatenated once
per call), keys and values written into preallocated buffers, attention as two batched matmuls over the
filled columns. Measured on the organism's benchmark rollout (``benchmarks/bench_decode_profile.py``):
1.19x at 2 threads, 1.15x at 1 thread; the non-matmul, non-attention op time falls from 79 to 57 ms.

Finished rows leave the batch lazily: they keep their slot (their samples are dropped) until an eighth
of the slots are finished, then the buffers are compacted in one copy. The draws are those of
:func:`steerlib.rollout.sample_rollouts`: the running rows, in order, sample from the same RNG or from
the same per-row uniforms, so only float rounding (fused matmuls, attention without the flash kernel)
separates the two loops (in bf16 that rounding is coarse enough to change a draw now and then).
Steering (``resid_post`` vectors, per-prompt routing) is added exactly as the steering hooks add it
(:meth:`steerlib.steering.SteeringHandle.resid_delta`); hidden-state capture writes what the capture
hooks write.

:func:`blocker` says why a call cannot take this path (``None`` when it can): it needs a CPU, a Qwen2 or
Llama model of the standard layout in float32, float64 or bfloat16, no hooks from anyone else
(ablation, patching and tracing keep the module loop), ``positions="all"`` and ``resid_post`` vectors
only. It is the default only where it pays (:func:`pays`: narrow models, like the organisms, and bf16
weights).

Example:
    >>> from transformers import Qwen2Config, Qwen2ForCausalLM
    >>> model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    >>> blocker(model, None, "all") is None
    True
    >>> blocker(model, None, "prompt")
    "positions='prompt' (the lean loop steers every column)"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from steerlib.arch import model_parts
from steerlib.steering import SteeringHandle, SteeringVector

__all__ = ["blocker", "pays", "LeanBlocks", "decode"]

COMPACT = 0.125  # compact the batch once this share of its slots is finished
NARROW = 256  # the widest residual stream the lean loop is the default for (see pays)


def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as m

    if m._global_forward_hooks or m._global_forward_pre_hooks:
        return True
    return any(mod._forward_hooks or mod._forward_pre_hooks for mod in model.modules())


def blocker(model: nn.Module, vectors: Sequence[SteeringVector] | None, positions: str) -> str | None:
    """Why :func:`decode` cannot run this call (``None``: it can). Check before adding your own hooks."""
    try:
        parts = model_parts(model)
    except TypeError as err:
        return str(err)
    cfg = parts.causal_lm.config
    p = parts.lm_head.weight
    if p.device.type != "cpu":
        return f"the model is on {p.device.type} (the lean loop is for CPUs)"
    if p.dtype not in (torch.float32, torch.float64, torch.bfloat16):
        return f"dtype {p.dtype}"
    if cfg.model_type not in ("qwen2", "llama"):
        return f"model type {cfg.model_type!r}"
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return "sliding-window or tensor-parallel attention"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if parts.causal_lm.training and getattr(cfg, "attention_dropout", 0.0):
        return "attention dropout in training mode"
    if positions != "all":
        return f"positions={positions!r} (the lean loop steers every column)"
    if any(v.site != "resid_post" for v in vectors or ()):
        return "a vector at a site other than resid_post"
    qkv = [getattr(b.self_attn, n) for b in parts.layers for n in ("q_proj", "k_proj", "v_proj")]
    unbiased = [parts.lm_head] + [b.self_attn.o_proj for b in parts.layers]
    unbiased += [getattr(b.mlp, n) for b in parts.layers for n in ("gate_proj", "up_proj", "down_proj")]
    if any(type(x) is not nn.Linear for x in qkv + unbiased):
        return "a projection that is not a plain Linear (an adapter?)"
    if any(x.bias is not None for x in unbiased):
        return "a bias on the output, MLP or unembedding projections"
    if _hooked(parts.causal_lm):
        return "hooks on the model (ablation, patching or tracing need the module loop)"
    return None


def pays(model: nn.Module) -> bool:
    """Whether the lean loop is worth taking by default: a narrow model (hidden size at most ``NARROW``),
    where per-op cost bounds a decode step, or bf16 weights, where the module loop's casts and bf16
    element-wise ops add to every step. Measured: 1.15-1.19x on the 96-wide organism's benchmark rollout;
    0.98x on SmolLM2-135M in float32 (576 wide, 49k vocabulary: matmuls and the prefill dominate); on
    Qwen2.5-Coder-0.5B in bf16 (24 rows, 400 tokens; ``benchmarks/bench_qwen_cpu.py``) 1.16x in one run
    and 0.98x in the next, i.e. no difference this machine's noise can show. It stays the bf16 default
    because its KV buffers are preallocated (the module loop's cache grows by concatenation, a cost
    that grows with batch and length); that reason is not yet measured."""
    parts = model_parts(model)
    return parts.hidden_size <= NARROW or parts.lm_head.weight.dtype == torch.bfloat16


def _rms(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """The Qwen2 / Llama RMSNorm, op for op."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


class LeanBlocks:
    """The decoder's weights arranged for one-token steps (QKV and gate-up concatenated) and its KV buffers.

    Args:
        model: a model :func:`blocker` accepts.
        cache: the ``DynamicCache`` after the prefill (and its expansion to the sample rows).
        width: columns to hold (prompt width + new tokens).
    """

    def __init__(self, model: nn.Module, cache: Any, width: int) -> None:
        parts = model_parts(model)
        self.parts = parts
        self.heads, self.kv_heads, self.head_dim = parts.n_heads, parts.n_kv_heads, parts.head_dim
        self.blocks = []
        for b in parts.layers:
            a, m = b.self_attn, b.mlp
            bias = None
            if a.q_proj.bias is not None:
                bias = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
            self.blocks.append((b.input_layernorm, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), bias,
                                a.o_proj.weight, a.scaling, b.post_attention_layernorm,
                                torch.cat([m.gate_proj.weight, m.up_proj.weight]), m.down_proj.weight))
        self.keys, self.values = [], []
        for layer in cache.layers:
            k, v = layer.keys, layer.values
            kb = k.new_empty(k.shape[0], k.shape[1], width, k.shape[3])  # a column is written before it is read
            vb = torch.empty_like(kb)
            kb[:, :, : k.shape[2]], vb[:, :, : k.shape[2]] = k, v
            self.keys.append(kb)
            self.values.append(vb)

    def select(self, keep: torch.Tensor, filled: int) -> None:
        """Keep the batch slots ``keep`` (in order); only the first ``filled`` columns are copied."""
        def part(x: torch.Tensor) -> torch.Tensor:
            out = x.new_empty(len(keep), *x.shape[1:])
            out[:, :, :filled] = x[keep, :, :filled]
            return out

        self.keys = [part(x) for x in self.keys]
        self.values = [part(x) for x in self.values]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, col: int, bias: torch.Tensor,
             deltas: dict[int, torch.Tensor], on_block: Callable[[int, torch.Tensor], None] | None) -> torch.Tensor:
        """One token per slot at column ``col``: the next-token logits ``(slots, vocab)``.

        ``bias``: ``(slots, 1, 1, col + 1)`` additive attention mask; ``deltas``: what each steered block
        adds to its output; ``on_block(i, h)``: sees the hidden state entering block ``i``.
        """
        p = self.parts
        n, nq, nk, d = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        h = p.decoder.embed_tokens(tokens)
        cos, sin = p.decoder.rotary_emb(h, positions[:, None])  # (slots, 1, head_dim)
        half = d // 2
        for i, (n1, wqkv, bqkv, wo, scale, n2, wgu, wd) in enumerate(self.blocks):
            if on_block is not None:
                on_block(i, h)
            qkv = F.linear(_rms(h, n1), wqkv, bqkv).view(n, nq + 2 * nk, d)
            qk = qkv[:, : nq + nk]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), -1) * sin
            self.keys[i][:, :, col] = qk[:, nq:]
            self.values[i][:, :, col] = qkv[:, nq + nk :]
            q = qk[:, :nq].reshape(n, nk, nq // nk, d)
            scores = torch.matmul(q, self.keys[i][:, :, : col + 1].transpose(-1, -2)) * scale + bias
            att = torch.matmul(scores.softmax(-1), self.values[i][:, :, : col + 1]).reshape(n, nq * d)
            h = h + F.linear(att, wo)
            gate, up = F.linear(_rms(h, n2), wgu).chunk(2, -1)
            h = h + F.linear(F.silu(gate) * up, wd)
            if i in deltas:
                h = h + deltas[i]
        return p.lm_head(_rms(h, p.norm))


def decode(
    model: nn.Module,
    cache: Any,
    logits: torch.Tensor,
    mask: torch.Tensor,
    last: torch.Tensor,
    *,
    out_tokens: torch.Tensor,
    finished: torch.Tensor,
    stops: torch.Tensor,
    sample: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    handle: SteeringHandle | None,
    capture: tuple[torch.Tensor, torch.Tensor] | None,
) -> None:
    """The decode loop of :func:`steerlib.rollout.sample_rollouts` after its prefill, on :class:`LeanBlocks`.

    Fills ``out_tokens`` ``(rows, new)`` and ``finished`` in place. ``logits``, ``mask`` and ``last``: the
    prefill's next-token logits, attention mask and last position per row; ``sample(logits, rows, t)``
    draws step ``t``'s tokens for the running ``rows``; ``handle``: the steering context of the prefill;
    ``capture``: ``(block per row, (rows, new, d) buffer)`` for the hidden state entering each row's block.
    """
    rows_total, new = out_tokens.shape
    width = mask.shape[1]
    blocks = LeanBlocks(model, cache, width + new)
    like = logits.new_zeros(rows_total, 1, blocks.parts.hidden_size)
    deltas: dict[int, torch.Tensor] = {}
    if handle is not None:
        for i in range(len(blocks.blocks)):
            delta = handle.resid_delta(i, like)
            if delta is not None:
                deltas[i] = delta.squeeze(1)
    bias = torch.zeros(rows_total, 1, 1, width + new, dtype=logits.dtype)
    bias[:, 0, 0, :width] = bias[:, 0, 0, :width].masked_fill(~mask.bool(), float("-inf"))
    rows = torch.arange(rows_total)  # the row in each slot
    live = torch.ones(rows_total, dtype=torch.bool)
    cap_blocks = capture[0] if capture is not None else None
    captured = set() if cap_blocks is None else set(cap_blocks.unique().tolist())  # blocks some row captures
    step_t = 0

    def on_block(i: int, h: torch.Tensor) -> None:
        if i not in captured:
            return
        sel = (cap_blocks == i) & live  # type: ignore[operator]
        if bool(sel.any()):
            capture[1][rows[sel], step_t] = h[sel]  # type: ignore[index]

    hook = on_block if capture is not None else None
    for t in range(new):
        running = live.nonzero().flatten()
        tok = sample(logits[running], rows[running], t)
        out_tokens[rows[running], t] = tok
        done = torch.isin(tok, stops)
        finished[rows[running[done]]] = True
        if t == new - 1 or bool(done.all()):
            break
        feed = torch.zeros_like(rows)
        feed[running] = tok
        if bool(done.any()):
            live[running[done]] = False
            if int(live.sum()) <= (1 - COMPACT) * len(rows):
                keep = live.nonzero().flatten()
                blocks.select(keep, width + t)
                rows, live, feed, last, bias = rows[keep], live[keep], feed[keep], last[keep], bias[keep]
                deltas = {i: x[keep] if x.shape[0] > 1 else x for i, x in deltas.items()}
                if cap_blocks is not None:
                    cap_blocks = cap_blocks[keep]
        last = last + 1
        step_t = t
        logits = blocks.step(feed, last, width + t, bias[..., : width + t + 1], deltas, hook)
