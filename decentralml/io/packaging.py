"""The contributor package: the creator's script, settings and the task's training settings.

Built as a deterministic tar.gz (sorted names, zero mtimes, no owners) so the same inputs give
the same bytes and the same sha256 on every machine; unpacked with tarfile's "data" filter, which
refuses absolute paths, ``..`` and links out of the folder.

A contributor unpacks packages published by strangers, so unpacking is bounded: the compressed
size, the size it inflates to (enforced while inflating, a chunk at a time: a 0.3 MB bomb never
becomes 300 MB in memory or on disk), the number of members and each member's size. Only
regular files and folders are accepted.

The package also carries a wheel of this project (``wheels/``), because the contributor's
script imports decentralml and decentralml is not on PyPI: start_task.sh installs it with
--no-deps next to the pinned requirements.txt, which do resolve from PyPI. The wheel (~150 kB,
far under the 32 MiB a contributor accepts) is built once per state of the sources and cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from decentralml.protocol.errors import StorageError

SETTINGS_FILE = "task.json"
WHEELS_DIR = "wheels"
PROJECT_SOURCES = (
    *("pyproject.toml", "README.md", "decentralml", "decentralml_cli", "flows", "tasks"),
    *("assets", "configs"),  # decentralml/assets and /configs link here (resources.py)
)
"""What a wheel of this project is built from (pyproject.toml's packages, its package data
and readme)."""
_REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip entry can carry
REQUIRED_FILES = ("model_contributor.py", "settings.py", "requirements.txt", "start_task.sh")

MiB = 2**20
MAX_PACKAGE_BYTES = 32 * MiB  # compressed, as downloaded
MAX_UNPACKED_BYTES = 128 * MiB  # the whole tar stream once inflated
MAX_MEMBERS = 256
MAX_MEMBER_BYTES = 64 * MiB
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = MiB  # inflated bytes per step
_SPOOL_IN_MEMORY = 8 * MiB  # a larger tar stream waits in a temporary file, not in memory


def build_package(
    source_dir: str | Path,
    task_settings: Mapping[str, object],
    wheels: tuple[Path, ...] = (),
    data_files: Mapping[str, bytes] | None = None,
) -> bytes:
    """tar.gz of ``source_dir`` plus ``task.json`` holding the creator's training settings,
    the ``data_files`` (name: bytes, e.g. the shared slice) at the top level, and the
    ``wheels`` (files) under ``wheels/``."""
    source = Path(source_dir)
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise StorageError(f"contributor assets in {source} lack {missing}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as archive:
        for path in sorted(p for p in source.rglob("*") if _packaged(p)):
            _add_bytes(archive, path.relative_to(source).as_posix(), path.read_bytes(), path)
        settings = json.dumps(dict(task_settings), indent=2, sort_keys=True).encode()
        _add_bytes(archive, SETTINGS_FILE, settings, None)
        for name, data in sorted((data_files or {}).items()):
            _add_bytes(archive, name, data, None)
        for wheel in sorted(wheels):
            _add_bytes(archive, f"{WHEELS_DIR}/{wheel.name}", wheel.read_bytes(), None)
    return _strip_gzip_mtime(buffer.getvalue())


def project_wheel(project_root: Path, cache_dir: Path) -> Path | None:
    """A wheel of this project, built from ``project_root`` once per state of its sources
    (``cache_dir/<sha256 of the sources>/``), so a round does not rebuild it. None when the
    project runs installed, without its sources: packages then carry no wheel, and
    start_task.sh asks for an interpreter that has decentralml (DECENTRALML_PYTHON).

    Built with pip from a copy of the sources (nothing is written into the project), without
    build isolation (no download) and with a fixed SOURCE_DATE_EPOCH, so the same sources
    give the same bytes."""
    if not (project_root / "pyproject.toml").is_file():
        return None
    target = cache_dir / _sources_digest(project_root)
    found = sorted(target.glob("*.whl"))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=cache_dir) as scratch:
        copy, out = Path(scratch) / "src", Path(scratch) / "out"
        for name in PROJECT_SOURCES:
            _copy_source(project_root / name, copy / name)
        _pip_wheel(copy, out)
        try:
            out.rename(target)  # atomic: a concurrent build that won keeps its own
        except OSError:
            if not target.is_dir():
                raise
    return sorted(target.glob("*.whl"))[0]


def _sources_digest(project_root: Path) -> str:
    digest = hashlib.sha256()
    for name in PROJECT_SOURCES:
        root = project_root / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if _packaged(p))
        for path in files:
            digest.update(path.relative_to(project_root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _copy_source(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    elif source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _pip_wheel(source: Path, out: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*command, "--quiet", "--wheel-dir", str(out), str(source)],
        env={**os.environ, "SOURCE_DATE_EPOCH": _REPRODUCIBLE_EPOCH},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not list(out.glob("*.whl")):
        last = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise StorageError(f"cannot build the decentralml wheel for the package: {last}")


def _packaged(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes, origin: Path | None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755 if origin is not None and origin.stat().st_mode & 0o111 else 0o644
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def _strip_gzip_mtime(data: bytes) -> bytes:
    """gzip stamps the current time in bytes 4..8; zero it so builds are reproducible."""
    return data[:4] + b"\x00\x00\x00\x00" + data[8:]


def unpack_package(
    data: bytes,
    destination: str | Path,
    *,
    max_package_bytes: int = MAX_PACKAGE_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> dict[str, object]:
    """Extract safely into ``destination`` and return the task settings it carries.

    Every limit is checked before anything is written; a package over one is refused with a
    StorageError naming the limit and what was found.
    """
    if len(data) > max_package_bytes:
        raise StorageError(
            f"contributor package is {len(data)} bytes compressed (limit {max_package_bytes})"
        )
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as tar_stream:
        _gunzip_bounded(data, max_unpacked_bytes, tar_stream)
        target = Path(destination)
        target.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(fileobj=tar_stream, mode="r:") as archive:
                members = _checked_members(archive, target, max_members, max_member_bytes)
                archive.extractall(target, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise StorageError(f"contributor package cannot be unpacked: {error}") from error
    return _read_settings(target)


def _gunzip_bounded(data: bytes, limit: int, spool: IO[bytes]) -> None:
    """Inflate gzip ``data`` (one or more members) into ``spool`` a chunk at a time, stopping
    as soon as the output exceeds ``limit``: memory holds one chunk, never the whole stream."""
    if not data.startswith(_GZIP_MAGIC):
        raise StorageError("contributor package cannot be unpacked: not a gzip file")
    written = 0
    pending = data
    try:
        while pending:  # concatenated gzip members are one stream, as gzip itself reads them
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not inflater.eof:
                chunk = inflater.decompress(pending, min(_CHUNK, limit - written + 1))
                pending = inflater.unconsumed_tail
                if not chunk and not pending and not inflater.eof:
                    raise StorageError(
                        "contributor package cannot be unpacked: the gzip stream is truncated"
                    )
                written += len(chunk)
                if written > limit:
                    raise StorageError(
                        f"contributor package unpacks to more than {limit} bytes from "
                        f"{len(data)} compressed (limit {limit}): refused as a possible "
                        "decompression bomb"
                    )
                spool.write(chunk)
            pending = inflater.unused_data
    except zlib.error as error:
        raise StorageError(f"contributor package cannot be unpacked: {error}") from error
    spool.seek(0)


def _checked_members(
    archive: tarfile.TarFile, target: Path, max_members: int, max_member_bytes: int
) -> list[tarfile.TarInfo]:
    """The members, read header by header: the first one over a limit stops the reading."""
    members: list[tarfile.TarInfo] = []
    for member in archive:  # reads the whole stream: truncation shows here
        if len(members) == max_members:
            raise StorageError(
                f"contributor package has more than {max_members} members (limit {max_members})"
            )
        if PurePosixPath(member.name).is_absolute():
            raise StorageError(
                f"contributor package cannot be unpacked: absolute path {member.name!r}"
            )
        tarfile.data_filter(member, str(target))  # its own messages: links out, special files
        if not (member.isdir() or (member.isreg() and not member.issparse())):
            raise StorageError(
                f"contributor package cannot be unpacked: {member.name!r} is not a regular "
                "file or folder (links and sparse files are refused)"
            )
        if member.size > max_member_bytes:
            raise StorageError(
                f"contributor package member {member.name!r} is {member.size} bytes "
                f"(limit {max_member_bytes})"
            )
        members.append(member)
    return members


def _read_settings(target: Path) -> dict[str, object]:
    settings_path = target / SETTINGS_FILE
    if not settings_path.is_file():
        raise StorageError(f"contributor package has no {SETTINGS_FILE}")
    try:
        settings = json.loads(settings_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StorageError(f"contributor package's {SETTINGS_FILE} is not JSON: {error}") from None
    if not isinstance(settings, dict):
        raise StorageError(f"contributor package's {SETTINGS_FILE} must hold a JSON object")
    return settings
