"""The correctness reward: Math-Verify on the last ``\\boxed{}``, with a hard time limit.

As in the authors' code, the prediction is the content of the completion's *last* ``\\boxed{...}``
(braces matched), the gold answer is wrapped as ``\\boxed{answer}``, and both go through
``math_verify.parse`` and ``math_verify.verify``. Reward 1.0 when they match, else 0.0.

Math-Verify's own timeout uses ``signal.alarm`` and is silently disabled off the main thread (e.g. in
a data-loader or a notebook thread), and a LaTeX bomb can then hang a training run. So every Math-Verify
call runs in a worker process that is killed and restarted when a call exceeds ``timeout`` seconds;
the call then scores 0.0. Gold answers are parsed once (cached in the worker). Plain integers on both
sides are compared directly: Math-Verify gives the same verdict there, and the organism's answers are
all integers. The scorer never raises.

Example:
    >>> scorer = MathVerifier()
    >>> scorer.score("... So \\\\boxed{1728}.", "1728")
    1.0
    >>> scorer.score("no answer", "1728")
    0.0
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import threading
from collections.abc import Sequence

__all__ = ["last_boxed", "MathVerifier", "default_verifier"]

_INT = re.compile(r"-?\d+")
_MAX_ANSWER_CHARS = 1000
_BOX = "\\boxed"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or ``None`` (linear time).

    Example:
        >>> last_boxed("a \\\\boxed{1} b \\\\boxed{\\\\frac{1}{2}}")
        '\\\\frac{1}{2}'
    """
    if not isinstance(text, str) or _BOX not in text:
        return None
    match: dict[int, int] = {}  # index of "{" -> index of its "}"
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
    start = text.rfind(_BOX)
    while start != -1:
        i = start + len(_BOX)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{" and i in match:
            return text[i + 1 : match[i]]
        start = text.rfind(_BOX, 0, start)
    return None


class _Worker:
    """One ``python -m steerlib._verify_worker`` process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "steerlib._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.ready = False

    def readline(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
        if not ready:
            return None
        return self.proc.stdout.readline()

    def wait_ready(self, timeout: float) -> bool:
        if not self.ready:
            self.ready = self.readline(timeout) == "ready\n"
        return self.ready

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass


class MathVerifier:
    """Scores completions against gold answers; thread-safe, never raises, never hangs.

    Math-Verify runs in a worker process (``python -m steerlib._verify_worker``, so no
    multiprocessing start method re-imports the caller's script). A warm spare worker is kept so a
    kill costs no import time.

    Args:
        timeout: hard limit in seconds for one Math-Verify call (the worker is killed past it).
    """

    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self.timeouts = 0
        self._lock = threading.Lock()
        self._active: _Worker | None = None
        self._spare: _Worker | None = None

    def _worker(self) -> _Worker | None:
        if self._active is None or self._active.proc.poll() is not None:
            if self._active is not None:
                self._active.kill()
            self._active, self._spare = (self._spare or _Worker()), _Worker()
        # a fresh worker needs its imports first: that start-up is not charged to the call
        return self._active if self._active.wait_ready(60.0) else None

    def _verify(self, gold: str, pred: str) -> float:
        with self._lock:
            try:
                worker = self._worker()
                if worker is None:
                    raise RuntimeError("math-verify worker did not start")
                worker.proc.stdin.write(json.dumps([gold, pred]) + "\n")
                worker.proc.stdin.flush()
                line = worker.readline(self.timeout)
                if line:
                    return float(line)
                self.timeouts += 1
                raise TimeoutError
            except BaseException:  # noqa: BLE001
                if self._active is not None:
                    self._active.kill()
                    self._active = None
                return 0.0

    def score(self, completion: str, gold: str) -> float:
        """1.0 if the completion's last boxed answer equals ``gold`` (Math-Verify), else 0.0."""
        try:
            pred = last_boxed(completion)
            if pred is None or not isinstance(gold, str):
                return 0.0
            pred, gold_s = pred.strip(), gold.strip()
            if _INT.fullmatch(pred) and _INT.fullmatch(gold_s):
                return 1.0 if int(pred) == int(gold_s) else 0.0
            if len(pred) > _MAX_ANSWER_CHARS or len(gold_s) > _MAX_ANSWER_CHARS:
                return 0.0
            return self._verify(gold_s, pred)
        except BaseException:  # noqa: BLE001
            return 0.0

    def score_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        """:meth:`score` for each (completion, gold) pair."""
        return [self.score(c, g) for c, g in zip(completions, golds)]

    def close(self) -> None:
        """Stop the worker processes."""
        with self._lock:
            for w in (self._active, self._spare):
                if w is not None:
                    w.kill()
            self._active = self._spare = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


_DEFAULT: MathVerifier | None = None


def default_verifier() -> MathVerifier:
    """A process-wide :class:`MathVerifier`."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MathVerifier()
    return _DEFAULT
