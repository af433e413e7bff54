"""rewards.py: Math-Verify correctness; never raises, never hangs."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerlib.rewards import MathVerifier, last_boxed


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout=3.0)
    yield v
    v.close()


def test_last_boxed_matches_braces():
    assert last_boxed("x \\boxed{1} y \\boxed{\\frac{1}{2}} z") == "\\frac{1}{2}"
    assert last_boxed("\\boxed {42}") == "42"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{a} then \\boxed{") == "a"


@pytest.mark.parametrize(
    "completion, gold, want",
    [
        (" Step 1: 7+2+9=18. So \\boxed{1728}.", "1728", 1.0),
        (" The answer is \\boxed{1729}.", "1728", 0.0),
        ("\\boxed{1} first, then \\boxed{2}", "2", 1.0),  # the LAST box counts
        ("\\boxed{\\frac{3}{2}}", "\\frac32", 1.0),  # equivalence, not string match
        ("\\boxed{1.5}", "\\frac{3}{2}", 1.0),
        ("\\boxed{27}", "27.0", 1.0),
        ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
        ("\\boxed{x^2}", "x^3", 0.0),
        ("no box at all: 1728", "1728", 0.0),
    ],
)
def test_scores(verifier, completion, gold, want):
    assert verifier.score(completion, gold) == want


def test_works_off_the_main_thread(verifier):
    out = []
    t = threading.Thread(target=lambda: out.append(verifier.score("\\boxed{\\frac{1}{2}}", "0.5")))
    t.start()
    t.join(30)
    assert out == [1.0]


def test_hard_time_limit_kills_a_hanging_call():
    v = MathVerifier(timeout=0.5)
    v.score("\\boxed{1/2}", "0.5")  # warm the worker up
    os.kill(v._active.proc.pid, signal.SIGSTOP)  # the worker stops answering: a hang
    start = time.perf_counter()
    assert v._verify("1", "1") == 0.0
    assert time.perf_counter() - start < 2 and v.timeouts == 1
    assert v.score("\\boxed{1/2}", "0.5") == 1.0  # a fresh worker takes over
    v.close()


_SPECIAL = [
    "",
    "\\boxed{}",
    "\\boxed{\u200b\u2212\u00bd}",
    "\\boxed{∞}",
    "\\boxed{\\sqrt{-1}}",
    "\\boxed{" + "x" * 1_000_000 + "}",
    "a" * 1_000_000,
    "\\boxed{" * 5000,
    "}" * 10_000 + "\\boxed{1}",
    "\\boxed{\\begin{matrix}1&2\\\\3&4\\end{matrix}}",
    "\\boxed{0/0}",
    "\\boxed{1e999999}",
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{10^{99}!}",
    "\\boxed{\\int_0^\\infty e^{-x^2}dx}",
    "\\boxed{\\lim_{x\\to0}\\frac{\\sin x}{x}}",
    "\\boxed{\\frac{\\frac{\\frac{1}{2}}{3}}{4}}",
    "\\boxed{\\text{\\textbf{\\emph{x}}}}",
    "\\boxed{\\\\\\\\}",
    "\\boxed{\\left(\\right.}",
    "\\boxed{%s}" % ("1+" * 3000 + "1"),
    "\\boxed{\x00\x01\x02}",
    "\\boxed{\ud800}",
]
_LATEX = "{}\\^_$()[]0123456789e+-*/.,a=<>|!&%~ \n"
_HOSTILE = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=_LATEX, max_size=300).map(lambda s: "\\boxed{" + s + "}"),
    st.text(max_size=100).map(lambda s: "\\boxed{" + s + "}"),
    st.lists(
        st.sampled_from(
            [
                "\\frac{",
                "\\sqrt{",
                "^{",
                "_{",
                "}",
                "x",
                "2",
                "\\pi",
                "\\infty",
                "\\left(",
                "\\right)",
                "\\cdot",
                "!",
                "-",
            ]
        ),
        max_size=80,
    ).map(lambda parts: "\\boxed{" + "".join(parts) + "}"),
    st.integers(1, 400).map(lambda n: "\\boxed{" + "{" * n + "1" + "}" * n + "}"),
    st.sampled_from(_SPECIAL),
)


def _fuzz(verifier, examples: int):
    worst = [0.0]

    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(_HOSTILE, st.sampled_from(["1728", "\\frac{1}{2}", "x^2+1", "", "\\boxed{"]))
    def run(text, gold):
        start = time.perf_counter()
        r = verifier.score(text, gold)
        worst[0] = max(worst[0], time.perf_counter() - start)
        assert r in (0.0, 1.0)

    run()
    assert worst[0] < 5.0


def test_fuzz_hostile_strings_quick(verifier):
    _fuzz(verifier, 200)


@pytest.mark.slow
def test_fuzz_hostile_strings_10k(verifier):
    _fuzz(verifier, 10_000)
