"""Sampling with fixed shapes: a preallocated KV cache, and on a GPU every decode step replayed from one
CUDA graph.

On a GPU the decode loop of :func:`steerlib.rollout.sample_rollouts` launches a few hundred small
kernels per step through Python; at small batches the host, not the chip, bounds a step.
Here the shapes never change, so one step can be captured once and replayed: the batch never shrinks
(a finished row keeps decoding; what it writes after its stop token is masked out), the KV cache is
allocated for prompt + budget columns (``transformers.StaticCache``), and the attention mask is a fixed
4D buffer whose next column is opened before each step. Sampling and the stop test stay outside the
graph; the host reads "all rows finished?" once every ``check_every`` steps instead of once per step.

The result is a :class:`steerlib.sampling.Rollouts` with the same contract. With ``prompt_seeds`` (one
uniform per row and step) the draws are those of :func:`~steerlib.rollout.sample_rollouts` and only
float rounding differs (the attention reduces over the padded cache width); with one ``generator`` the
draws differ, since every row draws at every step. On a CPU the same static loop runs eagerly (where
the tests check it). Steering must apply at every position (``"all"``).

Measured on an H100 (random-weight model of Qwen2.5-Math-1.5B's shapes, 200-token prompts, 256 new
tokens, after warm-up; ``benchmarks/gpu_static_decode.py``): 2.6x the default loop's tokens/s at 64 rows,
1.08x at 256 rows, where the GPU bounds the step. Hence off by default (``RLOOConfig.static_decode``).

Example:
    >>> ro = sample_rollouts_static(model, [[5, 6, 7]], 4, eos_id=2, pad_id=0,  # doctest: +SKIP
    ...                             max_new_tokens=32, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from steerlib.sampling import Rollouts, cache_kwarg, left_pad, mix_seed, row_uniforms, sample_token, trim_at_stop
from steerlib.steering import Positions, SteeringVector, steer

__all__ = ["sample_rollouts_static", "StaticCapture"]


class StaticCapture:
    """Forward pre-hooks keeping the hidden state entering each row's block, written by tensor ops only
    (no host sync, so a CUDA graph can hold them): the prefill's columns, then one column per decode step
    at the position held in the device tensor ``col``."""

    def __init__(self, layers: Any, row_blocks: torch.Tensor, rows: int, width: int, dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.row_blocks = row_blocks
        self.hidden = torch.zeros(rows, width, dim, dtype=dtype, device=device)
        self.col = torch.zeros(1, dtype=torch.long, device=device)
        self.prefill = True
        self.handles = [layers[b].register_forward_pre_hook(self._hook(b), with_kwargs=True, prepend=True)
                        for b in sorted({int(x) for x in row_blocks.tolist()})]

    def _hook(self, block: int) -> Any:
        mine = (self.row_blocks == block)[:, None, None]

        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            if self.prefill:
                w = h.shape[1]
                self.hidden[:, :w] = torch.where(mine, h, self.hidden[:, :w])
            else:
                old = self.hidden.index_select(1, self.col)
                self.hidden.index_copy_(1, self.col, torch.where(mine, h[:, -1:], old))
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _accepts_cache_position(model: Any) -> bool:
    """Whether the decoder takes ``cache_position`` (transformers < 5.24: a static cache writes there; later
    versions keep the write position inside the cache)."""
    from steerlib.arch import model_parts

    lm = model_parts(model).causal_lm
    forwards = (lm.forward, getattr(lm, "model", lm).forward)
    return any("cache_position" in inspect.signature(f).parameters for f in forwards)


@torch.inference_mode()
def sample_rollouts_static(
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
    graph: bool | None = None,
    check_every: int = 16,
) -> Rollouts:
    """:func:`steerlib.rollout.sample_rollouts` with fixed shapes (module docstring); ``graph``: replay the
    decode step from a CUDA graph (default: on a CUDA device)."""
    from transformers import StaticCache

    if vectors and positions != "all":
        raise ValueError(f"static decoding steers every position; positions={positions!r} needs sample_rollouts")
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, not {check_every}")
    device = next(model.parameters()).device
    use_graph = device.type == "cuda" if graph is None else graph
    if use_graph and device.type != "cuda":
        raise ValueError("graph=True needs the model on a CUDA device")
    dtype = next(model.parameters()).dtype
    ids, mask = left_pad(prompts, pad_id)
    n, width = ids.shape
    rows, length = n * k, width + max_new_tokens
    ids, mask = ids.repeat_interleave(k, 0).to(device), mask.repeat_interleave(k, 0).to(device)
    stops = torch.as_tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=device)
    neg = torch.finfo(dtype).min
    # Prefill mask: causal over the real tokens; a padding column sees itself only (finite, never read).
    q, kv = torch.arange(width, device=device)[:, None], torch.arange(length, device=device)[None]
    allowed = ((kv <= q) & torch.nn.functional.pad(mask.bool(), (0, max_new_tokens))[:, None]) | (kv == q)
    prefill_mask = torch.zeros(rows, 1, width, length, dtype=dtype, device=device).masked_fill(~allowed[:, None], neg)
    step_mask = torch.full((rows, 1, 1, length), neg, dtype=dtype, device=device)
    step_mask[:, 0, 0, :width] = step_mask[:, 0, 0, :width].masked_fill(mask.bool(), 0.0)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = StaticCache(config=model.config, max_cache_len=length)
    kw: dict[str, Any] = {cache_kwarg(model): cache}
    cache_pos = torch.arange(width, device=device) if _accepts_cache_position(model) else None
    routing = None if routes is None else torch.as_tensor(list(routes), dtype=torch.long).repeat_interleave(k)
    ctx: Any = contextlib.nullcontext(None)
    if vectors:
        ctx = steer(model, vectors, positions=positions, routing=None if routing is None else routing.to(device))
    cap = None
    if capture is not None:
        from steerlib.arch import model_parts

        blocks = torch.as_tensor(list(capture), dtype=torch.long).repeat_interleave(k).to(device)
        cap = StaticCapture(model_parts(model).layers, blocks, rows, length, model.config.hidden_size, dtype, device)
    row_seeds = None
    if prompt_seeds is not None:
        base = torch.as_tensor(list(prompt_seeds), dtype=torch.long, device=device).repeat_interleave(k)
        row_seeds = mix_seed(base ^ torch.arange(k, device=device).repeat(n))
    out_tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tok_in = torch.zeros(rows, 1, dtype=torch.long, device=device)
    pos_in = pos[:, -1:].clone()
    try:
        with ctx:
            extra = {} if cache_pos is None else {"cache_position": cache_pos}
            logits = model(input_ids=ids, attention_mask=prefill_mask, position_ids=pos, use_cache=True,
                           logits_to_keep=1, **kw, **extra).logits[:, -1]
            if cap is not None:
                cap.prefill = False
                cap.col.fill_(width)
            if cache_pos is not None:
                cache_pos = torch.full((1,), width, dtype=torch.long, device=device)

            def step() -> torch.Tensor:
                extra = {} if cache_pos is None else {"cache_position": cache_pos}
                return model(input_ids=tok_in, attention_mask=step_mask, position_ids=pos_in, use_cache=True,
                             **kw, **extra).logits[:, -1]

            graph_obj, graph_logits = None, None
            for t in range(max_new_tokens):
                u = row_uniforms(row_seeds, t) if row_seeds is not None else None
                tok = sample_token(logits, temperature, top_p, generator, u)
                out_tokens[:, t] = tok
                finished |= torch.isin(tok, stops)
                if t == max_new_tokens - 1 or ((t + 1) % check_every == 0 and bool(finished.all())):
                    break
                tok_in.copy_(tok[:, None])
                pos_in.add_(1)
                step_mask[:, 0, 0, width + t] = 0.0
                if not use_graph:
                    logits = step()
                elif graph_obj is None and t == 0:  # the first step runs eagerly: kernels warm, cache in use
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        logits = step().clone()
                    torch.cuda.current_stream().wait_stream(side)
                else:
                    if graph_obj is None:  # capture records the step without running it; replay runs it
                        graph_obj = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(graph_obj):
                            graph_logits = step()
                    graph_obj.replay()
                    logits = graph_logits  # type: ignore[assignment]
                if cap is not None:
                    cap.col.add_(1)
                if cache_pos is not None:
                    cache_pos.add_(1)
    finally:
        if cap is not None:
            cap.remove()
    out_tokens, comp_mask = trim_at_stop(out_tokens, stops, pad_id)  # `finished`: every sampled token was seen
    hidden = blocks_out = None
    if cap is not None:  # a completion token's column exists only if the next token was sampled after it
        fed = torch.nn.functional.pad(comp_mask[:, 1:], (0, 1))
        hidden = cap.hidden
        hidden[:, width:] *= fed[:, :, None].to(hidden.dtype)
        blocks_out = cap.row_blocks
    return Rollouts(prompt_ids=ids, prompt_mask=mask, completion_ids=out_tokens, completion_mask=comp_mask,
                    prompt_index=torch.arange(n, device=device).repeat_interleave(k), finished=finished,
                    hidden=hidden, hidden_block=blocks_out)
