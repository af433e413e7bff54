"""steerlib: RL-trained steering vectors, a reproducible study of arXiv 2509.06608.

The package is built in floors; a module imports only from its own floor or the floors below it, and
no two modules import each other, directly or around a circle (``tests/test_structure.py`` walks every
import, those inside functions included, and checks both):

1. **foundations** (:data:`FLOORS` ``[0]``): files written atomically, statistics, tables and figures,
   the model's parts and published shapes (``arch``), the loaded-model record, where model files come from
   (``sources``: hub ids and files shipped on PyPI, hash-checked), rewards (Math-Verify),
   the organism's world of problems, micro-batch cuts, data-parallel plumbing.
2. **steering and sampling**: steering vectors and their hooks, the pieces every decode loop shares
   (``sampling``: the rollout record, padding, seed hashing, token sampling, stops), the decode loops
   (``rollout``, ``fastdecode``, ``static_decode``, the vLLM backend), memory budgets, run directories
   and their layout, what a run trains (``trainables``), attention-head patching.
3. **training and evaluation**: the RLOO kernel, evaluation, vector files, teacher-forced traces, the
   problems of each preset (``data``), the organisms and the presets.
4. **recipes and analyses**: training recipes and snapshot selection, seeds, preset evaluation, and one
   module per analysis (logit lens, ablation, propagation, transfer, adaptive steering, DiffSAE).
5. **the book**: the chapter registry (``chapters``), cost plans, the claims page, the chapter
   scaffold, the build graph and build, prebuilt runs, the organisms' acceptance figures (chapter 00's
   results), the multi-process launcher, page checks.

Example:
    >>> [len(floor) > 0 for floor in FLOORS]
    [True, True, True, True, True]
"""

__version__ = "0.1.0"

#: The floors, bottom first (see the module docstring); every module of the package is in one of them.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("atomic", "stats", "tables", "plots", "microbatch", "distributed", "cachesync", "loaded", "rewards",
     "_verify_worker", "world", "arch", "sources"),
    ("steering", "sampling", "budgets", "runs", "headpatch", "fastdecode", "static_decode", "rollout",
     "vllm_backend", "trainables"),
    ("evaluate", "rloo", "vectorfile", "traces", "gsm_symbolic", "data", "organism", "presets"),
    ("recipes", "preset_eval", "selection", "seeds", "transfer", "ablation", "adaptive", "diffsae", "lens",
     "propagation", "efficiency"),
    ("chapters", "plan", "claims", "reallm", "organism_checks", "chapter", "prebuild", "launch", "buildgraph", "book",
     "pagecheck"),
)
