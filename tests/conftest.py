"""Tiny models built from configs (never downloaded)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 48


def tiny_model(arch: str = "qwen2", *, dtype: torch.dtype = torch.float64, seed: int = 0, layers: int = 3):
    """A 3-layer, width-16 model with 4 query heads in 2 KV groups, random weights, eval mode."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(arch)
    model = model.to(dtype).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(params=["qwen2", "llama"])
def model(request):
    return tiny_model(request.param)


@pytest.fixture
def batch():
    """A left-padded batch of 3 prompts of lengths 6, 4 and 5."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 6), generator=g)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, :2] = 0
    mask[2, :1] = 0
    ids[mask == 0] = 0
    return ids, mask


QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_chat_tokenizer():
    """The organism's tokenizer with a Qwen-style chat template (no download)."""
    from steerlib.world import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """The organism cache of this test session (a temporary folder)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_org(tiny_cache):
    """The seconds-scale 'tiny' organism, pretrained once per test session into a temporary cache."""
    from steerlib.organism import load_organism

    return load_organism("tiny", cache_dir=tiny_cache, progress=False)
