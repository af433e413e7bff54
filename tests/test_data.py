"""data.py: loaders on fixture files in the real schemas, and the prompt templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlib.data import SYSTEM_PROMPT, MathProblem, load_problems, render_prompt

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    "source, n, first_answer, first_id",
    [
        ("deepscaler", 2, "2", "deepscaler-0"),  # the row without an answer is dropped
        ("aime24", 2, "204", "aime24-2024-I-1"),
        ("aime25", 1, "70", "aime25-0"),
        ("amc23", 1, "27.0", "amc23-0"),
        ("math500", 1, "\\left( 3, \\frac{\\pi}{2} \\right)", "math500-test/precalculus/807.json"),
        ("minerva", 1, "1.6", "minerva-0"),  # answer = last \boxed{} of the solution
        ("olympiad", 1, "32", "olympiad-1606"),  # $...$ stripped
    ],
)
def test_loaders_map_real_columns_to_one_schema(source, n, first_answer, first_id):
    probs = load_problems(source, path=str(FIX / f"{source}.jsonl"))
    assert len(probs) == n
    assert all(isinstance(p, MathProblem) and p.source == source and p.problem for p in probs)
    assert probs[0].answer == first_answer and probs[0].id == first_id


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown source 'gsm8k'"):
        load_problems("gsm8k")


def test_organism_source_is_deterministic_and_split():
    a = load_problems("organism", n=50, split="test", seed=0)
    b = load_problems("organism", n=50, split="test", seed=0)
    v = load_problems("organism", n=50, split="validation", seed=0)
    assert a == b and not {p.id for p in a} & {p.id for p in v}
    a0 = a[0]
    x, y, z = map(int, a0.problem.split("+"))
    assert int(a0.answer) == x + y + z


def test_plain_qwen_math_fallback_and_append():
    text = render_prompt("What is 1+1?", "qwen_math", append="To")
    assert text.startswith("A conversation between User and Assistant.")
    assert text.endswith("User: What is 1+1? Assistant:To")


def test_chat_template_is_used_with_the_system_prompt():
    from conftest import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    text = render_prompt(MathProblem("x", "What is 1+1?", "2", "t"), "qwen_math", tok)
    assert text == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nWhat is 1+1?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3_format_without_a_chat_template():
    text = render_prompt("What is 1+1?", "llama3")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert SYSTEM_PROMPT in text and text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown template"):
        render_prompt("x", "alpaca")
