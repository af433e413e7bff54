"""Where things live inside a supported decoder-only model.

steerlib supports the Qwen2 / Qwen2.5 / Llama / Mistral family: a causal LM whose decoder stack is
``model.model`` with ``layers``, a final ``norm`` and an ``lm_head``. Each decoder layer has
``input_layernorm``, ``self_attn`` (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``),
``post_attention_layernorm`` and ``mlp`` (``down_proj``). A PEFT wrapper around such a model is
unwrapped. Anything else fails with an error that names what is missing.

Example:
    >>> from transformers import Qwen2Config, Qwen2ForCausalLM
    >>> model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    >>> parts = model_parts(model)
    >>> parts.n_layers, parts.hidden_size, parts.n_kv_groups, parts.head_dim
    (2, 16, 2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from torch import nn

__all__ = ["ModelParts", "UnsupportedModelError", "model_parts", "model_id", "untuple", "retuple", "ModelShape",
           "MODELS", "shape_of"]


class UnsupportedModelError(TypeError):
    """The model does not have the structure steerlib hooks into."""


@dataclass(frozen=True)
class ModelParts:
    """Handles on the modules steerlib reads and hooks.

    Attributes:
        causal_lm: the ``*ForCausalLM`` module (PEFT wrappers removed).
        decoder: the decoder stack (``causal_lm.model``).
        layers: the decoder layers, in order.
        norm: the final norm applied before the unembedding.
        lm_head: the unembedding.
        hidden_size: residual-stream width.
        n_heads: query heads per layer.
        n_kv_heads: key/value heads (KV groups) per layer.
        head_dim: width of one head.
    """

    causal_lm: nn.Module
    decoder: nn.Module
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return len(self.layers)

    @property
    def n_kv_groups(self) -> int:
        """Number of KV groups (one per key/value head)."""
        return self.n_kv_heads

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def check_layer(self, layer: int) -> None:
        """Raise ``ValueError`` with one clear line if ``layer`` is not a valid 0-based index."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer!r} is out of range: this model has {self.n_layers} decoder layers "
                f"(valid: 0..{self.n_layers - 1})"
            )


def _unwrap(model: nn.Module) -> nn.Module:
    # peft.PeftModel (and its LoraModel) expose the wrapped causal LM through get_base_model().
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def model_parts(model: nn.Module) -> ModelParts:
    """Locate the decoder layers, final norm and unembedding of a supported model.

    Args:
        model: a Qwen2/Llama/Mistral-style ``*ForCausalLM`` (optionally wrapped by PEFT).

    Returns:
        The handles, with head geometry read from the config.

    Raises:
        UnsupportedModelError: naming the first missing attribute.
    """
    lm = _unwrap(model)
    name = type(model).__name__
    decoder = getattr(lm, "model", None)
    missing = [
        path
        for path, ok in [
            ("lm_head", hasattr(lm, "lm_head")),
            ("model.model", decoder is not None),
            ("model.model.layers", decoder is not None and hasattr(decoder, "layers")),
            ("model.model.norm", decoder is not None and hasattr(decoder, "norm")),
        ]
        if not ok
    ]
    if missing:
        raise UnsupportedModelError(
            f"{name} is not supported by steerlib: it lacks {missing[0]} (supported: Qwen2/Qwen2.5, "
            "Llama, Mistral-style causal LMs with model.model.layers, model.model.norm, lm_head)"
        )
    layer0 = decoder.layers[0]
    for sub in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"):
        if not hasattr(layer0, sub):
            raise UnsupportedModelError(f"{name} is not supported by steerlib: its decoder layers lack `{sub}`")
    cfg = lm.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    return ModelParts(
        causal_lm=lm,
        decoder=decoder,
        layers=decoder.layers,
        norm=decoder.norm,
        lm_head=lm.lm_head,
        hidden_size=int(cfg.hidden_size),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
    )


def model_id(model: nn.Module) -> str:
    """Best-known identifier of a model: ``config.steerlib_model_id`` or ``_name_or_path`` ("" if none).

    Example:
        >>> model_id(model)  # doctest: +SKIP
        'Qwen/Qwen2.5-Math-1.5B'
    """
    cfg = _unwrap(model).config
    return str(getattr(cfg, "steerlib_model_id", "") or getattr(cfg, "_name_or_path", "") or "")


def untuple(output: Any) -> torch.Tensor:
    """The hidden states of a module's output: decoder layers return a tensor (transformers 5) or a
    tuple whose first entry is the tensor (4.x); attention returns ``(output, weights)``.

    Example:
        >>> untuple((torch.ones(1), None)).item(), untuple(torch.zeros(1)).item()
        (1.0, 0.0)
    """
    return output if isinstance(output, torch.Tensor) else output[0]


def retuple(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden states replaced by ``hidden`` (same shape: tensor or tuple)."""
    return hidden if isinstance(output, torch.Tensor) else (hidden, *tuple(output[1:]))


@dataclass(frozen=True)
class ModelShape:
    """What the cost depends on: the published configuration of a model."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def block_params(self) -> int:
        """Weights of the decoder blocks (attention + MLP), without embeddings and unembedding."""
        d, kv = self.hidden, self.kv_heads * self.head_dim
        return self.layers * (2 * d * d + 2 * d * kv + 3 * d * self.intermediate)

    @property
    def params(self) -> int:
        return self.block_params + self.vocab * self.hidden * (1 if self.tied else 2)

    def kv_bytes_per_token(self, element: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * element

    def activation_bytes_per_token(self, element: int = 2) -> int:
        """What the backward pass keeps per token, all blocks (norms, q/k/v, attention output, and the
        MLP's gate, up and product): about ``6 d + 3 ff`` elements a layer."""
        return self.layers * (6 * self.hidden + 3 * self.intermediate) * element


#: Published configurations (config.json of each model on the Hugging Face hub).
MODELS: dict[str, ModelShape] = {
    "Qwen/Qwen2.5-Math-1.5B": ModelShape(28, 1536, 8960, 12, 2, 151936, tied=True),
    "Qwen/Qwen2.5-Math-7B": ModelShape(28, 3584, 18944, 28, 4, 152064),
    "meta-llama/Llama-3.1-8B-Instruct": ModelShape(32, 4096, 14336, 32, 8, 128256),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ModelShape(30, 576, 1536, 9, 3, 49152, tied=True),
    # as the GGUF loader builds them: the output matrix untied
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": ModelShape(24, 896, 4864, 14, 2, 151936),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": ModelShape(28, 1536, 8960, 12, 2, 151936),
}


def shape_of(model: Any) -> ModelShape:
    """The :class:`ModelShape` of a loaded model (from its config)."""
    c = getattr(model, "config", None) or model.base_model.config
    return ModelShape(c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
                      c.num_key_value_heads, c.vocab_size, bool(getattr(c, "tie_word_embeddings", False)))
