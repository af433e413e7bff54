"""The chapter registry: every chapter of the book, once, with everything the tooling needs to know.

A :class:`ChapterSpec` names a chapter (its source ``notebooks/<name>.py``, its page
``book/chapters/<name>.ipynb``, its results ``book/results/<name>.json``), what the build must finish
before it (organisms, chapter 02's training runs, other chapters), whether it runs on the CPU whatever
the preset, the steerlib extra its Colab install cell adds, its workload for the cost plan
(:mod:`steerlib.plan`), and the paper's claims it reports (keys of :data:`steerlib.claims.CLAIMS`).
The book build (:mod:`steerlib.book`), the plan, the claims page and the prebuilt runs
(:mod:`steerlib.prebuild`) read it here; no other module spells a chapter's name. Adding a chapter is one
entry here plus its source (see the README, "Adding a chapter").

This module imports nothing of steerlib: it sits at the bottom of the book layer.

Example:
    >>> CHAPTERS["02_layer_curve"].results.name, CHAPTERS["00_organism"].cpu_only
    ('02_layer_curve.json', True)
    >>> claim_chapters()["prefix_share"]
    '04_logit_lens'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ChapterSpec", "CHAPTERS", "chapter", "claim_chapters", "chapter_sources", "read_source", "ROOT",
           "NOTEBOOKS", "PAGES", "RESULTS", "ORGANISM", "TRAINING", "LAYER_CURVE", "LOGIT_LENS", "REAL_LM",
           "SWEEP_SEEDS", "PRESET_PARAMETERS", "default_parameters"]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PAGES = ROOT / "book" / "chapters"
RESULTS = ROOT / "book" / "results"

#: Chapter parameters that override preset fields of the same name (``None``: the preset's value): every
#: parameter that changes what is trained reaches the recipes this one typed way, in the preset.
PRESET_PARAMETERS = ("steps", "model", "eval_problems", "seed", "prompts_per_step", "completions_per_prompt",
                     "max_new_tokens", "layer", "lr", "adaptive_lr", "extra_layers")
#: Chapter 02's sweep seeds built as tasks of their own: its default ``seed`` and ``n_seeds`` (a test keeps them equal).
SWEEP_SEEDS = (0, 1, 2)

#: The plan's view of one chapter's work (:class:`steerlib.plan.Work`): ``run(groups, share, weights)``
#: seconds of an RLOO run, ``generate(rows)`` seconds of sampling, and the counts it needs.
Workload = Callable[[Any], dict[str, float]]


@dataclass(frozen=True)
class ChapterSpec:
    """One chapter of the book (see the module docstring).

    Attributes:
        name: ``NN_name``, the stem of its source, page and results file.
        title: the page's title.
        needs: build tasks that must finish first: ``organism-<name>``, a key of ``run_tasks`` of
            another chapter, or another chapter's name.
        workload: seconds per part of the chapter on one device, from a :class:`steerlib.plan.Work`.
        cpu_only: runs on the CPU whatever the preset (its Colab page asks for no GPU).
        extra: the steerlib extra its Colab install cell adds (``None``: the core only).
        trains_weights: the plan counts float32 master weights and Adam state (LoRA, full fine-tune).
        claims: keys of :data:`steerlib.claims.CLAIMS` this chapter measures on the organism.
        real_claims: keys it measures on a real pretrained model (the claim's ``real`` reader).
        run_tasks: its training runs built as tasks of their own (:mod:`steerlib.prebuild`): task
            name -> a sweep seed or a comparison run's name in :func:`steerlib.selection.baselines`.
        threads: the threads its build task runs with (0: the build's cores per job). A chapter whose
            matmuls fill every core (a real model in bf16) runs alone with all of them rather than at
            half speed beside another.
    """

    name: str
    title: str
    needs: tuple[str, ...]
    workload: Workload
    cpu_only: bool = False
    extra: str | None = None
    trains_weights: bool = False
    claims: tuple[str, ...] = ()
    real_claims: tuple[str, ...] = ()
    run_tasks: Mapping[str, str | int] = field(default_factory=dict)
    threads: int = 0

    @property
    def heading(self) -> str:
        """The page's title as the book shows it, numbered as the prose names chapters ("chapter 01").

        Example:
            >>> CHAPTERS["01_training"].heading
            '01 · Training one steering vector with RLOO'
        """
        return f"{self.name[:2]} · {self.title}"

    @property
    def source(self) -> Path:
        """``notebooks/<name>.py``."""
        return NOTEBOOKS / f"{self.name}.py"

    @property
    def page(self) -> Path:
        """The published page ``book/chapters/<name>.ipynb``."""
        return PAGES / f"{self.name}.ipynb"

    @property
    def results(self) -> Path:
        """The published results ``book/results/<name>.json``."""
        return RESULTS / f"{self.name}.json"


# -- workloads: what each chapter computes, in the plan's units ------------------------------------
def _organism(w: Any) -> dict[str, float]:
    return {"measurements": 4 * w.generate(w.P.eval_problems or 1000)}


def _training(w: Any) -> dict[str, float]:
    return {"training": w.n_seeds * w.run(), "selection": w.n_seeds * w.generate(w.n_snap * w.val_problems),
            "evaluation": w.generate((1 + w.n_seeds) * w.test) + w.generate(2 * min(w.test, 1000))}


def _layer_curve(w: Any) -> dict[str, float]:
    P, layers = w.P, w.layers
    lrs = {P.lr_for(layer) for layer in layers}
    sweep = w.run(len(layers), 0.5) if len(lrs) == 1 else sum(w.run(1, 1 - layer / P.n_layers) for layer in layers)
    return {"sweep": w.n_seeds * sweep, "baselines": w.run(1, 1.0) + w.run(1, 1.0, True) + w.run(1, 1.0, True),
            "selection": w.generate((w.n_seeds * len(layers) + 3) * w.n_snap * w.val_problems),
            "evaluation": w.generate((w.n_seeds * len(layers) + 3) * w.test + 4 * w.test)}


def _analysis(extra_runs: Callable[[Any], float], evaluations: Callable[[Any], float],
              weights: bool = False) -> Workload:
    """A chapter that trains ``extra_runs`` runs of its own and evaluates ``evaluations`` test sets."""
    def workload(w: Any) -> dict[str, float]:
        return {"training": extra_runs(w) * w.run(1, 1.0, weights),
                "evaluation": w.generate(int(evaluations(w) * min(w.test, w.P.eval_problems or w.test)))}
    return workload


def _real_lm(w: Any) -> dict[str, float]:
    """The last layer (``n_seeds`` runs), the penultimate, a middle layer and the preset's ``extra_layers``;
    ``n_seeds + 8`` evaluated configurations (base, each vector, three moved penultimate vectors, the
    prefix, a value-head patch) plus one per extra layer."""
    n, extra = w.P.n_layers, len(w.P.extra_layers)
    return {"training": w.n_seeds * w.run(1, 1 / n) + w.run(1, 2 / n) + (1 + extra) * w.run(1, 0.5),
            "selection": (w.n_seeds + 2 + extra) * w.generate(w.n_snap * w.val_problems) if w.n_snap > 1 else 0.0,
            "evaluation": w.generate((w.n_seeds + 8 + extra) * w.test)}


_RUN_TASKS: dict[str, str | int] = {
    **{f"run-sweep-seed{s}": s for s in SWEEP_SEEDS},
    "run-all-layer": "all layers",
    "run-lora": "LoRA",
    "run-full-ft": "full fine-tune",
}
_SWEEP = ("run-sweep-seed0",)
_SWEEPS = tuple(f"run-sweep-seed{s}" for s in SWEEP_SEEDS)  # every training seed's sweep (chapter 02's)

#: Every chapter, in the book's order.
CHAPTERS: dict[str, ChapterSpec] = {s.name: s for s in (
    ChapterSpec("00_organism", "The model organism", ("organism-main", "organism-llama", "organism-sibling"),
                _organism, cpu_only=True),
    ChapterSpec("01_training", "Training one steering vector with RLOO", ("organism-main",), _training,
                claims=("single_layer_gain", "first_token")),
    # 01: its seed-0 run is 02's single-layer run; 02's sweeps and comparison runs are build tasks of their own
    ChapterSpec("02_layer_curve", "A vector per layer: the layer curve", ("01_training", *_RUN_TASKS), _layer_curve,
                trains_weights=True, claims=("most_layers_help", "all_layer_vs_full"), run_tasks=_RUN_TASKS),
    ChapterSpec("03_persistence", "Persistence: does a vector become the later layers' vectors?",
                (*_SWEEPS, "run-all-layer"),
                _analysis(lambda w: 2 * w.n_seeds, lambda w: w.P.n_layers ** 2 + 4
                          + (w.n_seeds - 1) * (w.P.n_layers * (w.P.n_layers + 1) // 2 + 4)),
                claims=("diff_vector", "diff_diff", "orthogonal", "pairs")),
    ChapterSpec("04_logit_lens", "The last layer's vector as a first-token substitution bias", _SWEEPS,
                _analysis(lambda w: 1, lambda w: 6 + w.P.n_layers / 8 + 5 * (w.n_seeds - 1)),
                claims=("prefix_share", "kl_first_token")),
    ChapterSpec("05_attention_ablation", "The penultimate layer's vector: attention or MLP?", _SWEEPS,
                _analysis(lambda w: 2, lambda w: 5 * (w.shape.heads + w.shape.kv_heads) // 2 + 6 * (w.n_seeds - 1)),
                claims=("skip_attn", "skip_layer", "mlp_only", "v_head")),
    ChapterSpec("06_transfer", "Moving vectors between models",
                (*_SWEEPS, "organism-llama", "organism-sibling", "organism-tuned"),
                _analysis(lambda w: 6 + 2 * (w.n_seeds - 1), lambda w: 16 + 10 * (w.n_seeds - 1)),
                claims=("transfer_down", "transfer_up")),
    ChapterSpec("07_adaptive", "Adaptive steering and the vector's magnitude", (*_SWEEP, "run-full-ft"),
                _analysis(lambda w: w.P.n_layers + w.n_seeds, lambda w: w.P.n_layers + 44, weights=True),
                trains_weights=True, claims=("adaptive_magnitude",)),
    ChapterSpec("08_diffsae", "DiffSAE: features of the steering-induced change", _SWEEPS,
                _analysis(lambda w: 0, lambda w: 2 * w.n_seeds), claims=("sae_correct",)),
    ChapterSpec("09_real_lm", "The paper's tests on a real Qwen2.5 model", ("01_training", "04_logit_lens"), _real_lm,
                extra="gguf", real_claims=("single_layer_gain", "most_layers_help", "first_token", "kl_first_token",
                                           "prefix_share", "skip_attn", "skip_layer", "mlp_only", "v_head"),
                threads=2),
)}

#: The names other modules refer to (the chapters a module reads results or runs from).
ORGANISM, TRAINING, LAYER_CURVE, LOGIT_LENS, REAL_LM = (
    "00_organism", "01_training", "02_layer_curve", "04_logit_lens", "09_real_lm")


def chapter(name: str) -> ChapterSpec:
    """The chapter called ``name``; one line naming the chapters when there is none.

    Example:
        >>> chapter("01_training").title
        'Training one steering vector with RLOO'
    """
    if name not in CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; chapters: {', '.join(CHAPTERS)}")
    return CHAPTERS[name]


def claim_chapters() -> dict[str, str]:
    """Claim key -> the chapter that measures it on the organism."""
    return {key: spec.name for spec in CHAPTERS.values() for key in spec.claims}


def chapter_sources(root: Path = ROOT) -> list[Path]:
    """The chapter sources ``notebooks/NN_name.py`` that exist under ``root``, in order."""
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.py"))


def default_parameters(name: str) -> dict[str, Any]:
    """Chapter ``name``'s parameters as its page runs them by default: its ``parameters`` cell, executed
    (needs the repository's ``notebooks/`` and jupytext).

    Example:
        >>> default_parameters("02_layer_curve")["sweep_mode"]
        'auto'
    """
    from typing import Optional

    source = chapter(name).source
    cells = [c for c in read_source(source).cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source}: expected one cell tagged 'parameters', found {len(cells)}")
    namespace: dict[str, Any] = {"Optional": Optional}
    exec(cells[0].source, namespace)  # noqa: S102 - the repository's own chapter source
    return {k: v for k, v in namespace.items() if not k.startswith("__") and k != "Optional"}


def read_source(source: Path) -> Any:
    """A chapter source (jupytext ``py:percent``) as a notebook with a Python 3 kernel."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb
