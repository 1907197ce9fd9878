"""decentralml.io.packaging: the contributor package is reproducible, and unpacking it is safe.

Hostile archives are built with tarfile by hand; each one is unpacked into ``sandbox/dest`` and
the whole sandbox is listed afterwards, so a write outside the destination cannot go unseen.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from decentralml.io.packaging import REQUIRED_FILES, SETTINGS_FILE, build_package, unpack_package
from decentralml.protocol.errors import StorageError

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets" / "mnist" / "model_contributor"
SETTINGS = {
    "model": "mnist_mlp",
    "epochs": 2,
    "batch_size": 32,
    "learning_rate": 0.001,
    "data": {"source": "mnist", "partition": "iid", "seed": 42, "contributors": 5},
}


def _source_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return archive.getmembers()


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --- build ---------------------------------------------------------------------------------


def test_building_twice_gives_identical_bytes() -> None:
    first, second = build_package(ASSETS, SETTINGS), build_package(ASSETS, SETTINGS)
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_bytes_do_not_depend_on_mtimes_location_or_caches(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "model_contributor"
    shutil.copytree(ASSETS, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "settings.cpython-311.pyc").write_bytes(b"\x00cache")
    (copy / "stray.pyc").write_bytes(b"\x00cache")
    # Settings given in another key order are the same settings.
    reordered = dict(reversed(list(SETTINGS.items())))
    assert build_package(copy, reordered) == build_package(ASSETS, SETTINGS)


def test_different_settings_or_sources_give_different_bytes(tmp_path: Path) -> None:
    reference = build_package(ASSETS, SETTINGS)
    assert build_package(ASSETS, {**SETTINGS, "epochs": 3}) != reference
    copy = tmp_path / "model_contributor"
    shutil.copytree(ASSETS, copy)
    with (copy / "requirements.txt").open("a") as handle:
        handle.write("\n")
    assert build_package(copy, SETTINGS) != reference


def test_package_contents_and_metadata() -> None:
    data = build_package(ASSETS, SETTINGS)
    assert data[:2] == b"\x1f\x8b"  # gzip
    assert data[4:8] == b"\x00\x00\x00\x00"  # no build time in the gzip header
    members = _members(data)
    expected_names = sorted(_source_files(ASSETS))
    assert [m.name for m in members] == [*expected_names, SETTINGS_FILE]
    assert set(REQUIRED_FILES) <= set(expected_names)
    for member in members:
        assert member.isreg(), member.name
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )
        assert member.mode == (0o755 if member.name == "start_task.sh" else 0o644), member.name
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name, content in _source_files(ASSETS).items():
            assert archive.extractfile(name).read() == content, name
        settings = archive.extractfile(SETTINGS_FILE).read()
    assert json.loads(settings) == SETTINGS
    assert settings == json.dumps(SETTINGS, indent=2, sort_keys=True).encode()
    assert gzip.decompress(data)  # a well-formed stream end to end


def test_unpack_returns_the_settings_and_the_files(tmp_path: Path) -> None:
    dest = tmp_path / "task-7"
    assert unpack_package(build_package(ASSETS, SETTINGS), dest) == SETTINGS
    assert _source_files(dest) == {
        **_source_files(ASSETS),
        SETTINGS_FILE: json.dumps(SETTINGS, indent=2, sort_keys=True).encode(),
    }
    assert os.access(dest / "start_task.sh", os.X_OK)
    assert not os.access(dest / "settings.py", os.X_OK)


def test_the_unpacked_settings_module_reads_task_json(tmp_path: Path) -> None:
    """The contributor script's own settings.py finds what the creator packaged."""
    dest = tmp_path / "task"
    unpack_package(build_package(ASSETS, SETTINGS), dest)
    script = (
        "import json, settings; print(json.dumps([settings.MODEL_NAME, settings.EPOCHS, "
        "settings.BATCH_SIZE, settings.LEARNING_RATE, settings.DATA]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=dest, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["mnist_mlp", 2, 32, 0.001, SETTINGS["data"]]


def test_missing_required_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "model_contributor.py").write_text("print('train')\n")
    (tmp_path / "start_task.sh").mkdir()  # a folder is not the required file
    with pytest.raises(StorageError) as error:
        build_package(tmp_path, SETTINGS)
    assert str(error.value) == (
        f"contributor assets in {tmp_path} lack "
        "['settings.py', 'requirements.txt', 'start_task.sh']"
    )


def test_missing_source_folder_names_every_required_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"lack \['model_contributor\.py', 'settings\.py', "):
        build_package(tmp_path / "nope", SETTINGS)


# --- hostile archives ----------------------------------------------------------------------


def _archive(*members: tuple[str, str, bytes | str]) -> bytes:
    """Members as (kind, name, content-or-link-target), kind in {"file", "symlink", "hardlink"}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = payload
                archive.addfile(info)
    return buffer.getvalue()


TASK = ("file", SETTINGS_FILE, json.dumps(SETTINGS).encode())


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    folder = tmp_path / "sandbox"
    (folder / "outside").mkdir(parents=True)
    return folder


def _hostile_cases(sandbox: Path) -> dict[str, tuple[bytes, str]]:
    outside = sandbox / "outside"
    return {
        "dotdot": (_archive(TASK, ("file", "../evil", b"x")), "outside the destination"),
        "deep-dotdot": (
            _archive(TASK, ("file", "a/../../outside/evil", b"x")),
            "outside the destination",
        ),
        "symlink-absolute": (
            _archive(TASK, ("symlink", "link", str(outside))),
            "is a link to an absolute path",
        ),
        "symlink-relative-out": (
            _archive(TASK, ("symlink", "link", "../outside")),
            "outside the destination",
        ),
        "symlink-then-write-through": (
            _archive(("symlink", "link", "../outside"), ("file", "link/evil", b"x"), TASK),
            "outside the destination",
        ),
        "hardlink-out": (
            _archive(TASK, ("hardlink", "stolen", str(outside / "secret.txt"))),
            "is a link to an absolute path",
        ),
        "hardlink-relative-out": (
            _archive(TASK, ("hardlink", "stolen", "../outside/secret.txt")),
            "outside the destination",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "deep-dotdot",
        "symlink-absolute",
        "symlink-relative-out",
        "symlink-then-write-through",
        "hardlink-out",
        "hardlink-relative-out",
    ],
)
def test_hostile_archive_is_refused_and_writes_nothing_outside(sandbox: Path, case: str) -> None:
    (sandbox / "outside" / "secret.txt").write_text("keep me")
    data, message = _hostile_cases(sandbox)[case]
    before = _tree(sandbox)
    with pytest.raises(StorageError, match=f"contributor package cannot be unpacked: .*{message}"):
        unpack_package(data, sandbox / "dest")
    after = [p for p in _tree(sandbox) if p != "dest" and not p.startswith("dest/")]
    assert after == before
    assert (sandbox / "outside" / "secret.txt").read_text() == "keep me"
    assert not any(p.is_symlink() for p in (sandbox / "dest").rglob("*"))


def test_absolute_member_path_stays_inside_the_destination(sandbox: Path) -> None:
    target = sandbox / "outside" / "abs_evil"
    data = _archive(TASK, ("file", str(target), b"x"))
    before = _tree(sandbox)
    with contextlib.suppress(StorageError):  # refused (next test); nothing may escape either way
        unpack_package(data, sandbox / "dest")
    assert not target.exists()
    assert [p for p in _tree(sandbox) if not p.startswith("dest")] == before


def test_absolute_member_path_is_refused(sandbox: Path) -> None:
    data = _archive(TASK, ("file", str(sandbox / "outside" / "abs_evil"), b"x"))
    with pytest.raises(StorageError, match="absolute"):
        unpack_package(data, sandbox / "dest")


def test_device_file_is_refused(sandbox: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        archive.addfile(info)
    with pytest.raises(StorageError, match="is a special file"):
        unpack_package(buffer.getvalue(), sandbox / "dest")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a tarball", "not a gzip file"),
        (gzip.compress(b"gzip, but not a tar " * 40), "cannot be unpacked"),
        (b"", "cannot be unpacked"),
    ],
    ids=["garbage", "gzip-not-tar", "empty"],
)
def test_damaged_package_is_refused(sandbox: Path, data: bytes, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        unpack_package(data, sandbox / "dest")


def test_truncated_package_is_refused(sandbox: Path) -> None:
    data = build_package(ASSETS, SETTINGS)
    with pytest.raises(StorageError, match="contributor package cannot be unpacked"):
        unpack_package(data[: len(data) // 2], sandbox / "dest")


def test_package_without_settings_is_refused(sandbox: Path) -> None:
    data = _archive(("file", "model_contributor.py", b"print(1)\n"))
    with pytest.raises(StorageError) as error:
        unpack_package(data, sandbox / "dest")
    assert str(error.value) == "contributor package has no task.json"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"], ids=["invalid", "list"])
def test_settings_that_are_not_a_json_object_are_refused(sandbox: Path, content: bytes) -> None:
    with pytest.raises(StorageError, match=r"task\.json"):
        unpack_package(_archive(("file", SETTINGS_FILE, content)), sandbox / "dest")


# --- bounds: what a stranger's package may cost to unpack ----------------------------------

BOMB_BYTES = 300 * 2**20


class _Zeros:
    """A file of ``size`` zero bytes that never exists in memory at once."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A real package (task.json and all) around one 300 MiB file of zeros: ~0.3 MB gzipped."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as archive:
        settings = json.dumps(SETTINGS).encode()
        info = tarfile.TarInfo(SETTINGS_FILE)
        info.size = len(settings)
        archive.addfile(info, io.BytesIO(settings))
        info = tarfile.TarInfo("zeros.bin")
        info.size = BOMB_BYTES
        archive.addfile(info, _Zeros(BOMB_BYTES))
    return buffer.getvalue()


def test_decompression_bomb_is_refused_while_inflating(sandbox: Path, bomb: bytes) -> None:
    import resource
    import time

    assert len(bomb) < 2**20  # the tester's finding: well under a megabyte on the wire
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(StorageError) as error:
        unpack_package(bomb, sandbox / "dest")
    assert str(error.value).startswith(
        f"contributor package unpacks to more than {128 * 2**20} bytes from {len(bomb)} compressed"
    )
    assert time.perf_counter() - started < 10
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 64 * 1024, "the inflated stream was held in memory"
    assert _tree(sandbox / "dest") == []  # nothing written: the disk is untouched


def test_unpacked_limit_is_a_keyword_and_counts_the_tar_stream(sandbox: Path) -> None:
    data = build_package(ASSETS, SETTINGS)
    tar_size = len(gzip.decompress(data))
    limit = tar_size - 1
    with pytest.raises(StorageError, match=f"more than {limit} bytes .*limit {limit}"):
        unpack_package(data, sandbox / "dest", max_unpacked_bytes=tar_size - 1)
    assert unpack_package(data, sandbox / "dest", max_unpacked_bytes=tar_size) == SETTINGS


def test_package_over_the_compressed_limit_is_refused_before_inflating(sandbox: Path) -> None:
    data = build_package(ASSETS, SETTINGS)
    with pytest.raises(StorageError) as error:
        unpack_package(data, sandbox / "dest", max_package_bytes=len(data) - 1)
    assert str(error.value) == (
        f"contributor package is {len(data)} bytes compressed (limit {len(data) - 1})"
    )
    assert not (sandbox / "dest").exists()


def test_package_with_too_many_members_is_refused(sandbox: Path) -> None:
    many = [("file", f"f{i:04d}.txt", b"") for i in range(300)]
    with pytest.raises(StorageError) as error:
        unpack_package(_archive(TASK, *many), sandbox / "dest")
    assert str(error.value) == "contributor package has more than 256 members (limit 256)"
    assert _tree(sandbox / "dest") == []
    assert unpack_package(_archive(TASK, *many[:255]), sandbox / "fits") == SETTINGS


def test_member_over_the_single_member_limit_is_refused(sandbox: Path) -> None:
    data = _archive(TASK, ("file", "weights.bin", b"\x01" * 5000))
    with pytest.raises(StorageError) as error:
        unpack_package(data, sandbox / "dest", max_member_bytes=4096)
    assert str(error.value) == "contributor package member 'weights.bin' is 5000 bytes (limit 4096)"
    assert _tree(sandbox / "dest") == []


def test_links_inside_the_folder_are_refused_too(sandbox: Path) -> None:
    """Only regular files and folders: a package has no use for links, even harmless ones."""
    data = _archive(TASK, ("file", "a.txt", b"x"), ("symlink", "b.txt", "a.txt"))
    with pytest.raises(StorageError, match=r"'b\.txt' is not a regular file or folder"):
        unpack_package(data, sandbox / "dest")


def test_concatenated_gzip_members_still_unpack(sandbox: Path) -> None:
    data = build_package(ASSETS, SETTINGS)
    tar = gzip.decompress(data)
    split = gzip.compress(tar[:10_000]) + gzip.compress(tar[10_000:])
    assert unpack_package(split, sandbox / "dest") == SETTINGS
