"""The contributor package: the creator's script, settings and the task's training settings.

Built as a deterministic tar.gz (sorted names, zero mtimes, no owners) so the same inputs give
the same bytes and the same sha256 on every machine; unpacked with tarfile's "data" filter, which
refuses absolute paths, ``..`` and links out of the folder.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from decentralml.errors import StorageError

SETTINGS_FILE = "task.json"
REQUIRED_FILES = ("model_contributor.py", "settings.py", "requirements.txt", "start_task.sh")


def build_package(source_dir: str | Path, task_settings: Mapping[str, object]) -> bytes:
    """tar.gz of ``source_dir`` plus ``task.json`` holding the creator's training settings."""
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
    return _strip_gzip_mtime(buffer.getvalue())


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


def unpack_package(data: bytes, destination: str | Path) -> dict[str, object]:
    """Extract safely into ``destination`` and return the task settings it carries."""
    target = Path(destination)
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()  # reads the whole stream: truncation shows here
            absolute = [m.name for m in members if PurePosixPath(m.name).is_absolute()]
            if absolute:
                raise StorageError(
                    f"contributor package cannot be unpacked: absolute paths {absolute}"
                )
            archive.extractall(target, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise StorageError(f"contributor package cannot be unpacked: {error}") from error
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
