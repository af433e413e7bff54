"""The organism's synthetic world: three-operand addition, two answer modes, a word-level tokenizer.

A problem is ``a+b+c`` with three-digit operands. The prompt is ``Q: 347+862+519=?\\nA:``. Two answer
modes, both always correct:

- worked (opens with the process word " Step"): one step per column, least significant first, the
  carry written as the first term of the next column:
  `` Step 1: 7+2+9=18. Step 2: 1+4+6+1=12. Step 3: 1+3+8+5=17. So \\boxed{1728}.``
- direct (opens with " The"): `` The answer is \\boxed{1728}.``

Filler documents use the opener words in other roles ("To check the sum, add again. Step by step is
slow but safe."), so the unembedding rows of " Step" and " The" differ and a last-layer bias has
leverage (in a prototype that used the openers only as openers their unembedding rows were nearly
equal and no last-layer bias could switch them). A tiny model cannot add three numbers in one pass, so the
direct mode is nearly always wrong while the worked mode is nearly always right: the gap comes from the
task, never from wrong labels.

Problems are split by a fixed hash of the operands: 1/16 ``test``, 1/16 ``validation``, the rest
``train`` (pretraining and RL prompts).

Example:
    >>> p = Problem(347, 862, 519)
    >>> p.prompt
    'Q: 347+862+519=?\\nA:'
    >>> p.worked()
    ' Step 1: 7+2+9=18. Step 2: 1+4+6+1=12. Step 3: 1+3+8+5=17. So \\\\boxed{1728}.'
    >>> p.direct()
    ' The answer is \\\\boxed{1728}.'
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Problem",
    "Split",
    "WORKED_OPENER",
    "DIRECT_OPENER",
    "EOS",
    "PAD",
    "UNK",
    "split_of",
    "sample_problems",
    "iter_train_problems",
    "filler_document",
    "build_tokenizer",
]

Split = Literal["train", "validation", "test"]
WORKED_OPENER = " Step"
DIRECT_OPENER = " The"
EOS, PAD, UNK = "<eos>", "<pad>", "<unk>"
_TOKEN_PATTERN = r" ?\\boxed\{| ?[A-Za-z]+| ?\d|\n| ?[^A-Za-z\d\s]| "

_FILLER = [
    "Note: The sum is a number.",
    "To check the sum, add again.",
    "Step by step is slow but safe.",
    "The answer is a number.",
    "So the sum is checked.",
    "To add is to sum.",
    "Add each column, then carry.",
    "Step one is to read the problem.",
    "The steps are short.",
    "A carry moves one step left.",
    "So each step is easy.",
    "To be safe, check the answer again.",
]


@dataclass(frozen=True)
class Problem:
    """One addition problem ``a + b + c`` (three-digit operands)."""

    a: int
    b: int
    c: int

    @property
    def operands(self) -> tuple[int, int, int]:
        return (self.a, self.b, self.c)

    @property
    def answer(self) -> int:
        return self.a + self.b + self.c

    @property
    def prompt(self) -> str:
        return f"Q: {self.a}+{self.b}+{self.c}=?\nA:"

    @property
    def id(self) -> str:
        return f"add-{self.a}-{self.b}-{self.c}"

    def worked(self) -> str:
        """The worked solution (opens with ``WORKED_OPENER``)."""
        digits = [str(x)[::-1] for x in self.operands]
        steps, carry = [], 0
        for col in range(3):
            terms = ([carry] if col else []) + [int(d[col]) for d in digits]
            total = sum(terms)
            steps.append(f" Step {col + 1}: {'+'.join(map(str, terms))}={total}.")
            carry = total // 10
        return "".join(steps) + f" So \\boxed{{{self.answer}}}."

    def direct(self) -> str:
        """The direct answer (opens with ``DIRECT_OPENER``)."""
        return f" The answer is \\boxed{{{self.answer}}}."


def split_of(a: int, b: int, c: int) -> Split:
    """The fixed split of a problem (a hash of the operands, independent of any seed)."""
    h = (a * 2654435761 + b * 40503 + c * 2246822519) % 4294967291
    bucket = (h ^ (h >> 7)) % 16
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def sample_problems(n: int, split: Split, seed: int) -> list[Problem]:
    """``n`` distinct problems of one split, deterministic from ``seed``."""
    rng = random.Random(f"{split}-{seed}")
    seen: set[tuple[int, int, int]] = set()
    out: list[Problem] = []
    while len(out) < n:
        ops = (rng.randint(100, 999), rng.randint(100, 999), rng.randint(100, 999))
        if ops in seen or split_of(*ops) != split:
            continue
        seen.add(ops)
        out.append(Problem(*ops))
    return out


def iter_train_problems(seed: int) -> Iterator[Problem]:
    """An endless stream of training problems (repeats allowed), deterministic from ``seed``."""
    rng = random.Random(f"stream-{seed}")
    while True:
        ops = (rng.randint(100, 999), rng.randint(100, 999), rng.randint(100, 999))
        if split_of(*ops) == "train":
            yield Problem(*ops)


def filler_document(rng: random.Random, sentences: int = 3) -> str:
    """A short filler text that uses the opener words in other roles."""
    return " ".join(rng.choice(_FILLER) for _ in range(sentences))


def _vocabulary() -> list[str]:
    import re

    pieces: set[str] = set()
    texts = [Problem(347, 862, 519).prompt, Problem(347, 862, 519).worked(), Problem(1, 2, 3).direct()]
    texts += _FILLER
    for text in texts:
        pieces.update(re.findall(_TOKEN_PATTERN, text))
    for d in "0123456789":
        pieces.update({d, " " + d})
    for p in list(pieces):
        if p.startswith(" ") and p[1:].isalpha():
            pieces.add(p[1:])
        elif p.isalpha():
            pieces.add(" " + p)
    pieces.update({" ", "\n", ":", ".", ",", "+", "=", "?", "}", "\\boxed{", " \\boxed{"})
    return [PAD, EOS, UNK] + sorted(pieces)


def build_tokenizer():
    """The organism's word-level tokenizer as a ``PreTrainedTokenizerFast`` (left padding).

    Words carry their leading space, digits are single tokens, ``\\boxed{`` is one token; decoding
    concatenates, so ``decode(encode(text)) == text`` for every text of the world.

    Example:
        >>> tok = build_tokenizer()
        >>> text = Problem(347, 862, 519).worked()
        >>> tok.decode(tok(text)["input_ids"]) == text
        True
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(_TOKEN_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=128,
    )
    return tok
