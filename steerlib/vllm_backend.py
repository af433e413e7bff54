"""Rollouts on vLLM (extra ``steerlib[vllm]``, CUDA only): the authors' route to fast sampling.

The vector of layer ``l`` (site ``resid_post``) becomes a real bias parameter of layer ``l``'s
``mlp.down_proj``: the MLP's output is added to the residual stream right after it, so a bias there is
exactly the vector added after layer ``l`` (:mod:`steerlib.steering`), at every position of every
decode step. A Python forward hook would not do: once vLLM captures the decode step in CUDA graphs or
compiles it, a hook may not fire for every generated token (AIRI-Institute/SAE-Reasoning issue #3). A
parameter is part of the captured computation, and it is updated *in place* after each optimizer step
(:func:`set_vector`), so the captured graphs read the new values. The engine is built eager (no CUDA
graphs, no compilation) unless asked otherwise, because the bias is added after the engine has loaded.

What runs without a GPU (and is tested here): :func:`add_down_proj_bias` / :func:`set_vector` on any
Qwen2/Llama-style module tree (vLLM's and transformers' share ``model.layers[l].mlp.down_proj``) and
:func:`to_rollouts`, which turns vLLM's outputs into :class:`~steerlib.sampling.Rollouts`.

Example:
    >>> engine = VLLMRollouts("Qwen/Qwen2.5-Math-1.5B", layer=27)                   # doctest: +SKIP
    >>> engine.set(vector)                                                          # doctest: +SKIP
    >>> ro = engine.rollouts(prompt_ids, k=8, max_new_tokens=1024, stop_ids=[151643])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from steerlib.sampling import Rollouts, left_pad

__all__ = ["add_down_proj_bias", "set_vector", "to_rollouts", "VLLMRollouts"]


def _down_proj(model: nn.Module, layer: int) -> nn.Module:
    root = getattr(model, "model", model)
    layers = getattr(root, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no model.layers: not a Qwen2/Llama-style model")
    return layers[layer].mlp.down_proj


def add_down_proj_bias(model: nn.Module, layer: int) -> nn.Parameter:
    """Give layer ``layer``'s ``mlp.down_proj`` a zero bias parameter (or return the one it has).

    Example:
        >>> from tests.conftest import tiny_model                           # doctest: +SKIP
        >>> add_down_proj_bias(tiny_model(), 1).shape                       # doctest: +SKIP
        torch.Size([16])
    """
    proj = _down_proj(model, layer)
    if getattr(proj, "bias", None) is None:
        weight = proj.weight
        proj.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device),
                                 requires_grad=False)
    return proj.bias


def set_vector(model: nn.Module, layer: int, vector: torch.Tensor) -> None:
    """Write ``vector`` into layer ``layer``'s ``down_proj`` bias in place (the tensor keeps its address,
    which captured CUDA graphs rely on)."""
    bias = add_down_proj_bias(model, layer)
    with torch.no_grad():
        bias.copy_(vector.detach().to(bias))


def to_rollouts(outputs: Sequence[Any], k: int, *, pad_id: int, stop_ids: Sequence[int], max_new_tokens: int
                ) -> Rollouts:
    """vLLM ``RequestOutput`` objects (one per prompt, ``k`` completions each, in prompt order) as
    :class:`Rollouts`; a completion that ended on a stop token keeps it, as steerlib's own loop does."""
    prompts = [list(o.prompt_token_ids) for o in outputs]
    ids, mask = left_pad(prompts, pad_id)
    n = len(outputs) * k
    comp = torch.full((n, max_new_tokens), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((n, max_new_tokens), dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool)
    stops = set(int(s) for s in stop_ids)
    for i, out in enumerate(outputs):
        if len(out.outputs) != k:
            raise ValueError(f"prompt {i} has {len(out.outputs)} completions, expected {k}")
        for j, c in enumerate(out.outputs):
            toks = list(c.token_ids)[:max_new_tokens]
            stop = getattr(c, "stop_reason", None)
            ended = isinstance(stop, int) and stop in stops
            if ended and toks and toks[-1] not in stops and len(toks) < max_new_tokens:
                toks.append(stop)  # vLLM may leave the stop token out of token_ids
            r = i * k + j
            comp[r, : len(toks)] = torch.as_tensor(toks, dtype=torch.long)
            comp_mask[r, : len(toks)] = 1
            finished[r] = bool(toks) and toks[-1] in stops
    return Rollouts(ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), comp, comp_mask,
                    torch.arange(len(outputs)).repeat_interleave(k), finished)


class VLLMRollouts:
    """A vLLM engine that samples with one steering vector (a ``down_proj`` bias at ``layer``)."""

    def __init__(self, model: str, layer: int, *, dtype: str = "bfloat16", eager: bool = True,
                 gpu_memory_utilization: float = 0.5, **engine_kwargs: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise ModuleNotFoundError("the vLLM backend needs vLLM on a CUDA machine: pip install 'steerlib[vllm]'"
                                      ) from err
        if eager:  # the bias is added after loading: no graph or compiled code may predate it
            engine_kwargs.setdefault("enforce_eager", True)
            engine_kwargs.setdefault("compilation_config", 0)
        self.layer = layer
        self.llm = LLM(model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, **engine_kwargs)
        self._apply(lambda m: add_down_proj_bias(m, layer).shape)

    def _apply(self, fn: Any) -> list[Any]:
        apply = getattr(self.llm, "apply_model", None)
        if apply is None:
            raise RuntimeError("this vLLM has no LLM.apply_model (it reaches the model's weights): use vLLM >= 0.10")
        return apply(fn)

    def set(self, vector: torch.Tensor) -> None:
        """Write the vector into every worker's bias (after each optimizer step)."""
        v = vector.detach().float().cpu()
        self._apply(lambda m: set_vector(m, self.layer, v))

    def rollouts(self, prompts: Sequence[Sequence[int]], k: int, *, max_new_tokens: int, stop_ids: Sequence[int],
                 pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
                 prompt_seeds: Sequence[int] | None = None) -> Rollouts:
        """``k`` samples per prompt (token ids), one vLLM request per prompt (seeded per prompt if given)."""
        from vllm import SamplingParams, TokensPrompt

        params = [SamplingParams(n=k, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                 stop_token_ids=list(stop_ids), seed=None if prompt_seeds is None else prompt_seeds[i])
                  for i in range(len(prompts))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        return to_rollouts(outs, k, pad_id=pad_id, stop_ids=stop_ids, max_new_tokens=max_new_tokens)

    def sample(self, trainable: Any, prompts: Sequence[Sequence[int]], k: int, *, eos_id: Any, pad_id: int,
               max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
               prompt_seeds: Sequence[int] | None = None, **_: Any) -> Rollouts:
        """The trainer's rollouts (:class:`steerlib.rloo.RLOOTrainer` with ``engine=Engine(rollouts=this)``):
        the trainable's one ``resid_post`` vector at this engine's layer is written into the bias, then
        sampled."""
        vectors, _positions = trainable.steering()
        if (not vectors or len(vectors) != 1 or vectors[0].layer != self.layer or vectors[0].site != "resid_post"
                or vectors[0].route is not None):
            raise ValueError(f"the vLLM backend samples one resid_post vector at layer {self.layer}, unrouted")
        self.set(vectors[0].vector * vectors[0].scale)
        stops = [eos_id] if isinstance(eos_id, int) else list(eos_id)
        return self.rollouts(prompts, k, max_new_tokens=max_new_tokens, stop_ids=stops, pad_id=pad_id,
                             temperature=temperature, top_p=top_p, prompt_seeds=prompt_seeds)
