"""Math-Verify worker process for :mod:`steerlib.rewards` (JSON lines on stdin/stdout).

Runs as ``python -m steerlib._verify_worker``: prints ``ready`` once imported, then answers each
request line ``[gold, pred]`` with a score line. Math-Verify's signal-based timeouts work here
because this is the process's main thread.
"""

from __future__ import annotations

import json
import sys

__all__ = ["main"]

INNER_TIMEOUT = 1  # Math-Verify's own limits, seconds (the parent enforces a hard limit on top)


def main() -> None:
    """Serve requests until stdin closes."""
    import math_verify

    gold_cache: dict[str, object] = {}
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        score = 0.0
        try:
            gold, pred = json.loads(line)
            if gold not in gold_cache:
                if len(gold_cache) > 100_000:
                    gold_cache.clear()
                gold_cache[gold] = math_verify.parse("\\boxed{" + gold + "}", parsing_timeout=INNER_TIMEOUT)
            g = gold_cache[gold]
            p = math_verify.parse("\\boxed{" + pred + "}", parsing_timeout=INNER_TIMEOUT)
            if g and p and math_verify.verify(g, p, timeout_seconds=INNER_TIMEOUT):
                score = 1.0
        except BaseException:  # noqa: BLE001 - a reward must never crash training
            score = 0.0
        out.write(f"{score}\n")
        out.flush()


if __name__ == "__main__":
    main()
