"""world.py: the arithmetic world and its tokenizer."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from steerlib.world import (
    DIRECT_OPENER,
    WORKED_OPENER,
    Problem,
    build_tokenizer,
    sample_problems,
    split_of,
)

TOK = build_tokenizer()
ops = st.integers(100, 999)


@settings(max_examples=300, deadline=None)
@given(ops, ops, ops)
def test_worked_solution_is_correct_column_arithmetic(a, b, c):
    p = Problem(a, b, c)
    text = p.worked()
    assert text.startswith(WORKED_OPENER + " ")
    steps = re.findall(r"Step (\d): ([\d+]+)=(\d+)\.", text)
    assert [int(s[0]) for s in steps] == [1, 2, 3]
    carry, digits = 0, []
    for col, (_, terms, total) in enumerate(steps):
        terms = [int(t) for t in terms.split("+")]
        assert sum(terms) == int(total)
        expect = [int(str(x)[::-1][col]) for x in (a, b, c)]
        assert terms == ([carry] if col else []) + expect
        carry = int(total) // 10
        digits.append(int(total) % 10)
    assert text.endswith(f"So \\boxed{{{a + b + c}}}.")
    assert p.direct() == f"{DIRECT_OPENER} answer is \\boxed{{{a + b + c}}}."


@settings(max_examples=300, deadline=None)
@given(ops, ops, ops)
def test_tokenizer_round_trips_exactly(a, b, c):
    p = Problem(a, b, c)
    for text in (p.prompt, p.worked(), p.direct(), p.prompt + p.worked()):
        ids = TOK(text, add_special_tokens=False)["input_ids"]
        assert TOK.unk_token_id not in ids
        assert TOK.decode(ids) == text


def test_openers_and_special_tokens_are_single_tokens():
    for t in (WORKED_OPENER, DIRECT_OPENER, "\\boxed{", " \\boxed{"):
        assert len(TOK(t, add_special_tokens=False)["input_ids"]) == 1
    assert TOK.eos_token == "<eos>" and TOK.padding_side == "left"
    batch = TOK(["Q:", "Q: 1"], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0][0] == TOK.pad_token_id  # left padding


def test_splits_are_fixed_and_disjoint():
    # the split is a fixed function of the operands: about 1/16 test, 1/16 validation, the rest train
    import itertools

    counts = {"test": 0, "validation": 0, "train": 0}
    for a, b, c in itertools.islice(itertools.product(range(100, 140), repeat=3), 20000):
        counts[split_of(a, b, c)] += 1
    assert 0.04 < counts["test"] / 20000 < 0.09 and 0.04 < counts["validation"] / 20000 < 0.09
    test = sample_problems(300, "test", 0)
    assert test == sample_problems(300, "test", 0)
    assert all(split_of(*p.operands) == "test" for p in test)
    train = {p.operands for p in sample_problems(3000, "train", 0)}
    assert not train & {p.operands for p in test}
