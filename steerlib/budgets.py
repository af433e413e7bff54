"""Memory budgets: how much one piece of work may hold, from the free memory on CUDA, fixed on a CPU.

Three budgets bound every model run of a training step: the KV cache of a rollout chunk
(:func:`kv_token_budget`), the tokens of a teacher-forced micro-batch (:func:`micro_batch_token_budget`)
and the full-vocabulary logits held at once, in a decode step or a loss-pass chunk
(:func:`logit_element_budget`). On a CPU they are fixed numbers, so results do not depend on what else
the machine holds; on CUDA they are shares of the memory free when the run starts.

Example:
    >>> from tests.conftest import tiny_model                     # doctest: +SKIP
    >>> logit_element_budget(tiny_model()) == 1 << 27             # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["kv_token_budget", "micro_batch_token_budget", "logit_element_budget", "hidden_byte_budget"]


def _cuda_free(model: Any) -> int | None:
    """Free bytes on the model's CUDA device; ``None`` on any other device (the fixed budgets apply)."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])


def kv_token_budget(model: Any, *, cpu_tokens: int = 1 << 20, share: float = 0.5) -> int:
    """How many tokens of KV cache one rollout batch may hold: on CUDA, ``share`` of the free memory
    divided by the cache bytes per token (2 x layers x KV heads x head width x element size); on the
    CPU, ``cpu_tokens``.

    Example:
        >>> kv_token_budget(model)                    # doctest: +SKIP
        1048576
    """
    free = _cuda_free(model)
    if free is None:
        return cpu_tokens
    from steerlib.arch import model_parts

    parts = model_parts(model)
    per_token = 2 * parts.n_layers * parts.n_kv_heads * parts.head_dim * next(model.parameters()).element_size()
    return max(1, int(free * share) // per_token)


def micro_batch_token_budget(model: Any, *, share: float = 0.4, cpu_tokens: int = 32768) -> int:
    """Tokens per teacher-forced micro-batch: on CUDA, ``share`` of the free memory over the activations
    a token keeps for the backward pass (:func:`steerlib.plan.micro_batch_tokens`); ``cpu_tokens`` on a
    CPU."""
    free = _cuda_free(model)
    if free is None:
        return cpu_tokens
    from steerlib.arch import shape_of

    per_token = shape_of(model).activation_bytes_per_token(next(model.parameters()).element_size())
    return max(256, min(1 << 20, int(share * free) // per_token))


def logit_element_budget(model: Any, *, share: float = 0.05, cpu_elements: int = 1 << 27) -> int:
    """Full-vocabulary logits held at once (a decode step's batch, a loss-pass chunk): on CUDA,
    ``share`` of the free memory over 12 bytes an element (float32 logits, their softmax and its
    gradient); ``cpu_elements`` on a CPU (about 1.6 GB at 12 bytes). Not smaller: a loss-pass chunk of a
    real vocabulary must keep enough rows for the unembedding's matmul to run at speed; measured on
    Qwen2.5-Coder-0.5B in bf16 (151,936 tokens, 8 rows x 300 positions), 2^24 elements (chunks of 110
    row-positions) made the loss pass 4.5x slower than 2^27."""
    free = _cuda_free(model)
    return cpu_elements if free is None else max(1 << 20, int(share * free) // 12)


def hidden_byte_budget(model: Any, *, share: float = 0.1, cpu_bytes: int = 1 << 31) -> int:
    """Bytes a step's rollouts may keep of the hidden state entering the first steered block (so the
    loss pass starts there): ``share`` of the free memory on CUDA, ``cpu_bytes`` on a CPU.

    Example:
        >>> hidden_byte_budget(model)                 # doctest: +SKIP
        2147483648
    """
    free = _cuda_free(model)
    return cpu_bytes if free is None else int(share * free)
