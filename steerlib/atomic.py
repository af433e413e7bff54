"""Atomic file writes and JSON that stays valid: the one place files are written from.

Every file a run or a chapter publishes is written to a temporary file in the same directory and
renamed over the target, so an interrupted write leaves either the old file or the new one, never a
torn one. JSON is written strictly: ``NaN`` and infinities (not JSON) become ``null``.

Example:
    >>> import tempfile, pathlib, json
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"
    >>> _ = write_json(p, {"a": float("nan"), "b": [1.5]})
    >>> json.loads(p.read_text())
    {'a': None, 'b': [1.5]}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "json_clean", "write_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is removed if ``write`` raises (or is interrupted).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def json_clean(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None``, tuples by lists, numpy scalars by Python ones and
    dataclass instances (e.g. :class:`steerlib.stats.Estimate`) by dicts of their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_clean(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, value: Any, *, sort_keys: bool = True) -> Path:
    """Write ``value`` as strict JSON (NaN -> null), atomically, with a trailing newline."""
    text = json.dumps(json_clean(value), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    return atomic_write_text(path, text)
