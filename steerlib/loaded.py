"""The loaded-model record every chapter, recipe and analysis works with: an organism or a hub model.

:func:`steerlib.presets.load_model` returns one for any preset; :class:`steerlib.organism.Organism`
is the same record with the organism's configuration. ``info`` carries what identifies the weights
(``weights_sha256`` of a GGUF file, the organism's training record), which a run directory binds to
(:func:`steerlib.recipes.model_binding`).

Example:
    >>> m = LoadedModel("demo", model=None, tokenizer=None, info={"weights_sha256": "ab12"})
    >>> m.name, m.info["weights_sha256"], m.path
    ('demo', 'ab12', None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A frozen model (eval mode, no gradients) and its tokenizer, with what identifies them."""

    name: str
    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where its files are cached, when they are
