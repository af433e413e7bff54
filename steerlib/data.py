"""Problem sources with one schema, and the prompt templates.

Every source yields :class:`MathProblem` ``(id, problem, answer, source)``. The Hugging Face loaders use
the ids, splits and columns of the authors' scripts (the book's notes on the authors' code): DeepScaleR
for training and AIME 2024, AIME 2025, AMC 2023, MATH-500, Minerva Math and OlympiadBench for evaluation
(Minerva's answer is the last ``\\boxed{}`` of its solution). Pass ``path=`` (a local JSON/JSONL file in
the same schema) to load without the hub: that is how the tests run. The organism's arithmetic world is
the ``organism`` source; ``addition`` is natural-language two-digit addition for a real pretrained LM
and ``gsm_symbolic`` the GSM8K-derived GSM-Symbolic problems split by template
(:mod:`steerlib.gsm_symbolic`): train / validation / test disjoint by construction.

Templates: ``qwen_math`` (the authors' default: the tokenizer's chat template with the system prompt
"Please reason step by step, and put your final answer within \\boxed{}.", or their plain-text fallback
when the tokenizer has none), ``llama3`` (the Llama-3.1 chat format), ``organism`` and ``fewshot`` (two
worked examples in plain text, then ``Q: <problem>\nA:``; the answer is one line). ``append``
puts a fixed first token after the generation prompt (the paper's prefix test).

Example:
    >>> probs = load_problems("organism", n=3, split="test")
    >>> render_prompt(probs[0], "organism")[:3]
    'Q: '
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from steerlib.rewards import last_boxed

__all__ = [
    "MathProblem",
    "SOURCES",
    "BENCHMARKS",
    "TEMPLATES",
    "SYSTEM_PROMPT",
    "load_problems",
    "render_prompt",
    "split_problems",
    "split_prompts",
]

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
_PLAIN = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. Please reason step by step, and put your final answer within \\boxed{}.\n\nUser: {problem} Assistant:"
)
_LLAMA3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{system}<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{problem}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
FEWSHOT_EXAMPLES = ((12, 35), (58, 27))  # never drawn as problems
_FEWSHOT = "".join(f"Q: What is {a} + {b}?\nA: {a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.\n\n"
                   for a, b in FEWSHOT_EXAMPLES)
TEMPLATES = ("qwen_math", "llama3", "organism", "fewshot")


@dataclass(frozen=True)
class MathProblem:
    """One problem in the common schema."""

    id: str
    problem: str
    answer: str
    source: str


def _answer(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    text = str(value).strip()
    if len(text) >= 2 and text[0] == "$" and text[-1] == "$":
        text = text.strip("$").strip()
    return text


@dataclass(frozen=True)
class _Source:
    hf_id: str
    split: str
    configs: tuple[str | None, ...]
    convert: Callable[[dict, int], MathProblem | None]


def _simple(name: str, q: str, a: str, idcol: str | None = None) -> Callable[[dict, int], MathProblem | None]:
    def convert(row: dict, i: int) -> MathProblem | None:
        ans = _answer(row.get(a, ""))
        if not ans:
            return None  # the authors drop rows without an answer (DeepScaleR has 6)
        rid = str(row[idcol]) if idcol and row.get(idcol) is not None else str(i)
        return MathProblem(f"{name}-{rid}", str(row[q]), ans, name)

    return convert


def _minerva(row: dict, i: int) -> MathProblem | None:
    ans = last_boxed(str(row.get("solution", "")))
    if not ans:
        return None
    return MathProblem(f"minerva-{row.get('idx', i)}", str(row["problem"]), ans.strip(), "minerva")


SOURCES: dict[str, _Source] = {
    "deepscaler": _Source(
        "agentica-org/DeepScaleR-Preview-Dataset", "train", (None,), _simple("deepscaler", "problem", "answer")
    ),
    "aime24": _Source("Maxwell-Jia/AIME_2024", "train", (None,), _simple("aime24", "Problem", "Answer", "ID")),
    "aime25": _Source(
        "opencompass/AIME2025", "test", ("AIME2025-I", "AIME2025-II"), _simple("aime25", "question", "answer")
    ),
    "amc23": _Source("knoveleng/AMC-23", "train", (None,), _simple("amc23", "problem", "answer", "id")),
    "math500": _Source("HuggingFaceH4/MATH-500", "test", (None,), _simple("math500", "problem", "answer", "unique_id")),
    "minerva": _Source("knoveleng/Minerva-Math", "train", (None,), _minerva),
    "olympiad": _Source("knoveleng/OlympiadBench", "train", (None,), _simple("olympiad", "question", "answer", "id")),
}
BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiad")


def load_problems(
    source: str,
    *,
    path: str | None = None,
    n: int | None = None,
    split: str = "test",
    seed: int = 0,
) -> list[MathProblem]:
    """Problems of one source in the common schema.

    Args:
        source: ``organism``, ``deepscaler`` or a benchmark (``aime24``, ``aime25``, ``amc23``,
            ``math500``, ``minerva``, ``olympiad``).
        path: a local JSON/JSONL file with the source's real columns (no hub access).
        n: keep the first ``n`` problems (all when ``None``).
        split: for ``organism``, ``addition`` and ``gsm_symbolic``: ``train``, ``validation`` or ``test``.
        seed: for ``organism`` only: which problems are drawn.
    """
    if source == "addition":
        return addition_problems(split, n)
    if source == "gsm_symbolic":
        from steerlib import gsm_symbolic

        return [MathProblem(p.id, p.question, p.answer, source) for p in gsm_symbolic.problems(split, n)]
    if source == "organism":
        from steerlib.world import sample_problems

        probs = sample_problems(n or 1000, split, seed)  # type: ignore[arg-type]
        return [MathProblem(p.id, f"{p.a}+{p.b}+{p.c}", str(p.answer), "organism") for p in probs]
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose organism or one of {', '.join(SOURCES)}")
    import datasets

    spec = SOURCES[source]
    local = data_dir() / f"{source}.jsonl" if data_dir() is not None else None
    if path is None and local is not None and local.exists():
        path = str(local)
    if path is not None:
        parts = [datasets.load_dataset("json", data_files=path, split="train")]
    else:
        parts = [datasets.load_dataset(spec.hf_id, cfg, split=spec.split) for cfg in spec.configs]
    out: list[MathProblem] = []
    i = 0
    for ds in parts:
        for row in ds:
            prob = spec.convert(dict(row), i)
            i += 1
            if prob is not None:
                out.append(prob)
            if n is not None and len(out) >= n:
                return out
    return out


def addition_problems(split: str = "test", n: int | None = None) -> list[MathProblem]:
    """Two-digit additions ``What is a + b?`` (10 <= a, b <= 99; the few-shot examples excluded), in a
    fixed shuffled order cut into test (first 1,000), validation (next 1,000) and train (the rest, 6,098):
    disjoint by construction.

    Example:
        >>> addition_problems("test", 1)[0].problem.startswith("What is ")
        True
    """
    import random

    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, not {split!r}")
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100) if (a, b) not in FEWSHOT_EXAMPLES]
    random.Random("addition").shuffle(pairs)
    lo, hi = {"test": (0, 1000), "validation": (1000, 2000), "train": (2000, len(pairs))}[split]
    part = pairs[lo:hi][:n] if n is not None else pairs[lo:hi]
    return [MathProblem(f"addition-{a}+{b}", f"What is {a} + {b}?", str(a + b), "addition") for a, b in part]


def render_prompt(problem: MathProblem | str, template: str, tokenizer: Any = None, append: str = "") -> str:
    """The prompt text for one problem.

    Args:
        problem: a :class:`MathProblem` or the problem text.
        template: ``qwen_math``, ``llama3`` or ``organism``.
        tokenizer: used by ``qwen_math`` / ``llama3`` when it has a chat template.
        append: text put right after the generation prompt (the prefix test's first token).
    """
    text = problem.problem if isinstance(problem, MathProblem) else problem
    if template == "organism":
        prompt = f"Q: {text}=?\nA:"
    elif template == "fewshot":
        prompt = f"{_FEWSHOT}Q: {text}\nA:"
    elif template in ("qwen_math", "llama3"):
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        elif template == "llama3":
            prompt = _LLAMA3.format(system=SYSTEM_PROMPT, problem=text)
        else:
            bos = (getattr(tokenizer, "bos_token", None) or "") if tokenizer is not None else ""
            prompt = bos + _PLAIN.replace("{problem}", text)
    else:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    return prompt + append


def data_dir() -> Path | None:
    """``$STEERLIB_DATA``: a folder of ``<source>.jsonl`` files in the sources' real columns, used
    instead of the hub when a source's file is there (offline runs, Colab copies, the tests)."""
    value = os.environ.get("STEERLIB_DATA")
    return Path(value) if value else None


def split_problems(preset: Any, split: str, n: int | None = None) -> list[MathProblem]:
    """A preset's problems of one split: ``train``, ``validation`` or ``test``.

    For the organism the three splits are disjoint by construction (see :mod:`steerlib.world`). For
    hub presets, validation is the *last* ``preset.val_holdout`` rows of the training source, which
    the training split never includes, and test is every benchmark of the preset in turn (use
    :func:`benchmark_sets` to keep them apart).

    Example:
        >>> from steerlib.presets import resolve_preset
        >>> len(split_problems(resolve_preset("organism"), "validation", 3))
        3
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, not {split!r}")
    if preset.train_source == "organism":
        return load_problems("organism", n=n or (20000 if split == "train" else 1000), split=split, seed=preset.seed)
    if preset.train_source in ("addition", "gsm_symbolic"):  # splits of their own, disjoint by construction
        return load_problems(preset.train_source, split=split, n=n)
    if split == "test":
        return [p for probs in benchmark_sets(preset, n).values() for p in probs]
    rows = load_problems(preset.train_source)
    hold = min(preset.val_holdout, len(rows) // 2)
    part = rows[len(rows) - hold :] if split == "validation" else rows[: len(rows) - hold]
    return part[:n] if n is not None else part


def benchmark_sets(preset: Any, n: int | None = None) -> dict[str, list[MathProblem]]:
    """The preset's test benchmarks, each capped at ``n`` problems (default ``preset.eval_problems``)."""
    cap = n if n is not None else preset.eval_problems
    return {name: load_problems(name, n=cap) for name in preset.eval_benchmarks}


def split_prompts(
    preset: Any, tokenizer: Any, split: str, n: int | None = None, append: str = ""
) -> tuple[list[str], list[str]]:
    """``(prompts, answers)`` of :func:`split_problems`, rendered with the preset's template.

    Example:
        >>> from steerlib.presets import resolve_preset
        >>> split_prompts(resolve_preset("organism"), None, "test", 1)[0][0].startswith("Q: ")
        True
    """
    probs = split_problems(preset, split, n)
    return [render_prompt(p, preset.template, tokenizer, append) for p in probs], [p.answer for p in probs]


#: The tokens that end a completion, per template: a chat turn ends at its end-of-turn token, which is
#: not always the tokenizer's EOS (Qwen's base models use ``<|endoftext|>`` as EOS, Llama 3.1's
#: ``<|end_of_text|>``), so sampling that stops only at EOS runs past the answer.
STOP_TOKENS = {"qwen_math": ("<|im_end|>", "<|endoftext|>"), "llama3": ("<|eot_id|>", "<|end_of_text|>"),
               "organism": (), "fewshot": ("<|im_end|>", "<|endoftext|>")}


def stop_token_ids(tokenizer: Any, template: str) -> list[int]:
    """Token ids that end a completion under ``template``: its end-of-turn tokens that the tokenizer
    knows, plus the tokenizer's EOS.

    Example:
        >>> from steerlib.world import build_tokenizer
        >>> tok = build_tokenizer()
        >>> stop_token_ids(tok, "organism") == [tok.eos_token_id]
        True
    """
    if template not in STOP_TOKENS:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    ids = []
    for token in STOP_TOKENS[template]:
        i = tokenizer.convert_tokens_to_ids(token)
        if isinstance(i, int) and i != getattr(tokenizer, "unk_token_id", None) and i not in ids:
            ids.append(i)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if template == "fewshot":  # the answer is one line: every token holding a line break ends it
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        ids += [i for i, t in enumerate(vocab) if t and "\n" in tokenizer.convert_tokens_to_string([t])
                and i not in ids]
    return ids

