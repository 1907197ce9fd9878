"""decentralml.io.storage: one ArtifactStore over fsspec URLs, digests verified on every read.

memory:// and file:// (in tmp_path) are real fsspec backends; S3 runs in the integration
suite. A failed read never changes what is stored.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from decentralml.io.storage import (
    NO_RETRIES,
    ArtifactStore,
    Retries,
    StoredArtifact,
    check_protocol,
    normalize_url,
    sha256_hex,
    with_retries,
)
from decentralml.protocol.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    ConfigError,
    DigestMismatch,
    StorageError,
    StorageUnavailable,
)
from tests.faulty_fs import inject

PAYLOAD = b"\x00weights\xff" * 1000


@pytest.fixture
def memory_root() -> str:
    """A fresh root in fsspec's process-wide memory filesystem."""
    root = f"memory://decentralml-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, memory_root: str, tmp_path: Path) -> ArtifactStore:
    root = memory_root if request.param == "memory" else (tmp_path / "storage").as_uri()
    return ArtifactStore(root)


def test_sha256_hex_is_hashlib() -> None:
    assert sha256_hex(PAYLOAD) == hashlib.sha256(PAYLOAD).hexdigest()
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- put / get -----------------------------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(store: ArtifactStore) -> None:
    url = store.round_url("run-a", 1, "results/7.safetensors")
    assert not store.exists(url)
    artifact = store.put(url, PAYLOAD)
    assert artifact == StoredArtifact(
        url=url, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD)
    )
    assert store.exists(url)
    assert store.get(url) == PAYLOAD
    assert store.get(url, expected_sha256=artifact.sha256) == PAYLOAD


def test_put_overwrites(store: ArtifactStore) -> None:
    url = store.url_for("x.bin")
    store.put(url, b"first")
    artifact = store.put(url, b"second")
    assert store.get(url, expected_sha256=artifact.sha256) == b"second"


def test_empty_artifact(store: ArtifactStore) -> None:
    url = store.url_for("empty.bin")
    artifact = store.put(url, b"")
    assert artifact.size == 0
    assert store.get(url, expected_sha256=sha256_hex(b"")) == b""


def test_file_store_writes_the_documented_layout_on_disk(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "storage").as_uri())
    store.put(store.round_url("mnist", 2, "global.safetensors"), b"g")
    store.put(store.round_url("mnist", 2, "results/9.safetensors"), b"r")
    store.put(store.checkpoint_url("mnist", 2), b"c")
    on_disk = sorted(
        p.relative_to(tmp_path / "storage").as_posix()
        for p in (tmp_path / "storage").rglob("*")
        if p.is_file()
    )
    assert on_disk == [
        "runs/mnist/checkpoints/round-2.safetensors",
        "runs/mnist/round-2/global.safetensors",
        "runs/mnist/round-2/results/9.safetensors",
    ]
    assert (tmp_path / "storage/runs/mnist/round-2/results/9.safetensors").read_bytes() == b"r"


def test_two_stores_on_the_same_memory_root_share_artifacts(memory_root: str) -> None:
    writer, reader = ArtifactStore(memory_root), ArtifactStore(memory_root + "/")
    artifact = writer.put(writer.url_for("shared.bin"), PAYLOAD)
    assert reader.get(artifact.url, expected_sha256=artifact.sha256) == PAYLOAD


# --- failures ------------------------------------------------------------------------------


def test_digest_mismatch_names_recorded_and_actual(store: ArtifactStore) -> None:
    url = store.url_for("runs", "r", "round-1", "global.safetensors")
    store.put(url, PAYLOAD)
    recorded = hashlib.sha256(b"what was registered").hexdigest()
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(StorageError) as error:
        store.get(url, expected_sha256=recorded)
    assert str(error.value) == (
        f"{url} has sha256 {actual}, but {recorded} was recorded: "
        "the file was changed or damaged after it was registered"
    )


def test_file_changed_after_registration_is_detected_and_kept(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "storage").as_uri())
    url = store.round_url("r", 1, "results/3.safetensors")
    artifact = store.put(url, PAYLOAD)
    path = tmp_path / "storage/runs/r/round-1/results/3.safetensors"
    damaged = PAYLOAD[:-1] + b"\x01"  # one flipped byte, same size
    path.write_bytes(damaged)
    with pytest.raises(
        StorageError, match=f"has sha256 {sha256_hex(damaged)}, but {artifact.sha256}"
    ):
        store.get(url, expected_sha256=artifact.sha256)
    # Nothing lost: the evidence stays where it was, and reads without a digest still work.
    assert path.read_bytes() == damaged
    assert store.get(url) == damaged


def test_failed_reads_delete_nothing(store: ArtifactStore) -> None:
    url = store.url_for("keep.bin")
    artifact = store.put(url, PAYLOAD)
    with pytest.raises(StorageError, match="was recorded"):
        store.get(url, expected_sha256="0" * 64)
    with pytest.raises(StorageError, match="over the"):
        store.get(url, max_bytes=10)
    assert store.exists(url)
    assert store.get(url, expected_sha256=artifact.sha256) == PAYLOAD


def test_missing_artifact(store: ArtifactStore) -> None:
    url = store.round_url("r", 1, "results/404.safetensors")
    with pytest.raises(StorageError) as error:
        store.get(url, expected_sha256="0" * 64)
    assert str(error.value) == f"{url} does not exist"
    assert not store.exists(url)


def test_max_bytes_refuses_larger_files(store: ArtifactStore) -> None:
    url = store.url_for("big.bin")
    store.put(url, PAYLOAD)
    size = len(PAYLOAD)
    with pytest.raises(StorageError) as error:
        store.get(url, max_bytes=size - 1)
    assert str(error.value) == f"{url} is {size} bytes, over the {size - 1}-byte limit"
    assert store.get(url, max_bytes=size) == PAYLOAD


def test_unknown_protocol_is_a_config_error_at_once() -> None:
    """Not a StorageError: Prefect would retry that, and no retry makes a protocol known."""
    with pytest.raises(ConfigError, match="no storage backend for nosuchproto://bucket/prefix"):
        ArtifactStore("nosuchproto://bucket/prefix")
    store = ArtifactStore("memory://root")
    for read_or_write in (lambda: store.get("nosuchproto://b/x"), lambda: store.put("zz://x", b"")):
        with pytest.raises(ConfigError, match="fsspec knows no protocol") as error:
            read_or_write()
        assert not isinstance(error.value, StorageError)


def test_a_known_protocol_without_its_package_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(protocol: str) -> None:
        raise ImportError(f"Please install {protocol}fs")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(ConfigError, match="protocol 'gcs' needs a package that is not installed"):
        ArtifactStore("gcs://bucket/runs")


@pytest.mark.parametrize("url", ["s3://bucket/p", "simplecache::s3://bucket/p", "relative/dir"])
def test_known_protocols_are_checked_without_connecting(url: str) -> None:
    check_protocol(url)  # s3fs is installed; nothing is contacted


def test_writing_where_a_file_is_in_the_way_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file, not a folder")
    store = ArtifactStore(tmp_path.as_uri(), retries=NO_RETRIES)
    with pytest.raises(
        StorageUnavailable, match=r"cannot write .*runs/r/round-1/global\.safetensors"
    ):
        store.put(store.round_url("r", 1, "global.safetensors"), b"g")
    assert (tmp_path / "runs").read_text() == "a file, not a folder"


# --- URLs ----------------------------------------------------------------------------------


def test_url_layout_helpers(memory_root: str) -> None:
    store = ArtifactStore(memory_root)
    assert store.url_for("a", "b.bin") == f"{memory_root}/a/b.bin"
    assert store.round_url("mnist", 3, "assets.tar.gz") == (
        f"{memory_root}/runs/mnist/round-3/assets.tar.gz"
    )
    assert store.round_url("mnist", 3, "results/12.safetensors") == (
        f"{memory_root}/runs/mnist/round-3/results/12.safetensors"
    )
    assert store.checkpoint_url("mnist", 3) == (
        f"{memory_root}/runs/mnist/checkpoints/round-3.safetensors"
    )


@pytest.mark.parametrize(
    ("url", "relative"),
    [
        ("file://.decentralml/storage", ".decentralml/storage"),
        ("file://rel/dir/", "rel/dir"),
        ("rel/dir", "rel/dir"),
        ("./rel/../other", "other"),
    ],
)
def test_normalize_url_makes_relative_local_urls_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, relative: str
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = (tmp_path.resolve() / relative).as_uri()
    assert normalize_url(url) == expected
    assert expected.startswith("file:///")
    assert ArtifactStore(url).root_url == expected


def test_relative_root_resolves_to_the_same_place_from_any_later_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("file://storage")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    artifact = store.put(store.url_for("a.bin"), b"a")
    assert (tmp_path / "storage/a.bin").read_bytes() == b"a"
    assert artifact.url == (tmp_path.resolve() / "storage/a.bin").as_uri()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///abs/storage", "file:///abs/storage"),
        ("file:///abs/storage/", "file:///abs/storage"),
        ("s3://bucket/prefix/", "s3://bucket/prefix"),
        ("s3://bucket", "s3://bucket"),
        ("memory://root/", "memory://root"),
    ],
)
def test_normalize_url_leaves_absolute_urls_alone_but_the_trailing_slash(
    url: str, expected: str
) -> None:
    assert normalize_url(url) == expected


def test_bare_protocol_root_stays_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # if anything is written, it lands in tmp_path
    store = ArtifactStore("memory://")
    assert store.root_url == "memory://"
    assert store.url_for("runs", "x.bin").startswith("memory://")


class _SizelessMemoryFS(MemoryFileSystem):
    """The injected fault: a backend that cannot tell a file's size before reading it (some
    HTTP servers), and that counts what is read from it."""

    protocol = "sizeless"
    bytes_read = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("sizeless://"))

    def size(self, path):
        return None

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read = handle.read

            def counted(n=-1):
                data = read(n)
                _SizelessMemoryFS.bytes_read += len(data)
                return data

            handle.read = counted
        return handle


def test_max_bytes_bounds_the_read_when_the_backend_cannot_tell_the_size() -> None:
    fsspec.register_implementation("sizeless", _SizelessMemoryFS, clobber=True)
    store = ArtifactStore(f"sizeless://decentralml-test-{uuid.uuid4().hex}")
    url = store.url_for("assets.tar.gz")
    big = b"\x00" * (8 * 2**20)
    store.put(url, big)
    _SizelessMemoryFS.bytes_read = 0
    with pytest.raises(StorageError) as error:
        store.get(url, max_bytes=1000)
    assert str(error.value) == (
        f"{url} is more than 1000 bytes, over the 1000-byte limit (the read stopped there)"
    )
    assert _SizelessMemoryFS.bytes_read == 1001  # not the 8 MiB behind it
    assert store.get(url, max_bytes=len(big), expected_sha256=sha256_hex(big)) == big
    assert store.get(url) == big  # no limit: read to the end


# --- unavailable storage: retried; what is stored: final ------------------------------------


def test_with_retries_retries_unavailable_then_returns() -> None:
    calls, waits = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise StorageUnavailable("down")
        return "ok"

    assert with_retries(flaky, 5, [0.1, 0.5], sleep=waits.append) == "ok"
    assert len(calls) == 4 and waits == [0.1, 0.5, 0.5]  # the last delay repeats


def test_with_retries_gives_up_with_the_last_error_and_never_retries_others() -> None:
    waits: list[float] = []
    errors = iter([StorageUnavailable("first"), StorageUnavailable("second")])

    def down() -> None:
        raise next(errors)

    with pytest.raises(StorageUnavailable, match="second"):
        with_retries(down, 2, [], sleep=waits.append)
    assert waits == [0.0]
    calls = []

    def missing() -> None:
        calls.append(1)
        raise ArtifactMissing("gone")

    with pytest.raises(ArtifactMissing):
        with_retries(missing, 5, [1.0], sleep=waits.append)
    assert calls == [1]
    with pytest.raises(ValueError, match="attempts"):
        with_retries(lambda: None, 0, [])


def test_retries_are_checked() -> None:
    with pytest.raises(ValueError):
        Retries(0)
    with pytest.raises(ValueError):
        Retries(2, (-1.0,))


@pytest.fixture
def faulty_store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"faulty://{tmp_path / 'storage'}", retries=Retries(3, (0.0,)))


def test_unreadable_storage_is_unavailable_after_the_retries(faulty_store: ArtifactStore) -> None:
    artifact = faulty_store.put(faulty_store.url_for("a.bin"), PAYLOAD)
    with inject(fail_reads=1.0) as faults, pytest.raises(StorageUnavailable) as error:
        faulty_store.get(artifact.url, artifact.sha256)
    assert faults.failed == 3  # every try failed
    assert "injected fault" in str(error.value)
    assert not isinstance(error.value, (ArtifactMissing, DigestMismatch, ArtifactTooLarge))


def test_a_failed_write_is_retried(faulty_store: ArtifactStore) -> None:
    url = faulty_store.url_for("w.bin")
    with inject(fail_writes=0.5, seed=3):
        artifact = faulty_store.put(url, PAYLOAD)
    assert faulty_store.get(url, artifact.sha256) == PAYLOAD
    with inject(fail_writes=1.0), pytest.raises(StorageUnavailable, match="cannot write"):
        faulty_store.put(url, b"other")


def test_what_is_stored_is_not_retried(faulty_store: ArtifactStore) -> None:
    artifact = faulty_store.put(faulty_store.url_for("a.bin"), PAYLOAD)
    with inject() as faults:
        with pytest.raises(ArtifactMissing):
            faulty_store.get(faulty_store.url_for("none.bin"), "0" * 64)
        with pytest.raises(ArtifactTooLarge):
            faulty_store.get(artifact.url, artifact.sha256, max_bytes=10)
        with pytest.raises(DigestMismatch):
            faulty_store.get(artifact.url, "0" * 64)
    assert faults.reads == 2  # the wrong digest read twice (to be sure), nothing else retried


def _scripted_reads(monkeypatch: pytest.MonkeyPatch, store: ArtifactStore, *reads: bytes):
    """Make each read of ``store`` return the next of ``reads`` (what a backend delivered)."""
    script = iter(reads)
    monkeypatch.setattr(store, "_read", lambda url, max_bytes: next(script))


def test_one_damaged_read_is_read_again(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = b"\x01" + PAYLOAD[1:]
    _scripted_reads(monkeypatch, store, damaged, PAYLOAD)
    assert store.get(store.url_for("x"), sha256_hex(PAYLOAD)) == PAYLOAD


def test_the_same_wrong_bytes_twice_are_a_digest_mismatch(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    swapped = b"swapped"
    _scripted_reads(monkeypatch, store, swapped, swapped)
    with pytest.raises(DigestMismatch, match="was recorded"):
        store.get(store.url_for("x"), sha256_hex(PAYLOAD))


def test_reads_that_keep_changing_are_unavailable_not_a_mismatch(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(store.root_url, retries=Retries(2, (0.0,)))
    _scripted_reads(monkeypatch, store, b"a", b"b", b"c", b"d")
    with pytest.raises(StorageUnavailable, match="different bytes on two reads"):
        store.get(store.url_for("x"), sha256_hex(PAYLOAD))


@pytest.mark.parametrize(("fail", "corrupt"), [(0.2, 0.0), (0.0, 0.1), (0.2, 0.1)])
def test_intact_artifacts_survive_failed_and_damaged_reads(
    tmp_path: Path, fail: float, corrupt: float
) -> None:
    store = ArtifactStore(f"faulty://{tmp_path}", retries=Retries(6, (0.0,)))
    artifacts = [store.put(store.url_for(f"{i}.bin"), PAYLOAD + bytes([i])) for i in range(40)]
    with inject(fail_reads=fail, corrupt_reads=corrupt, seed=1) as faults:
        for i, artifact in enumerate(artifacts):
            assert store.get(artifact.url, artifact.sha256) == PAYLOAD + bytes([i])
    assert faults.failed + faults.corrupted >= 3  # the faults did happen (seeded)


def test_an_unknown_protocol_is_not_retried_by_the_flows() -> None:
    from tasks.policy import _retry_unless_permanent

    class FailedState:
        def result(self) -> None:
            ArtifactStore("memory://root").get("nosuchproto://b/x")

    assert _retry_unless_permanent(None, None, FailedState()) is False


# --- S3 credentials: one line naming the variables, never retried --------------------------


def test_s3_credential_failures_name_the_variables_and_nothing_else_does() -> None:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    from decentralml.io.storage import credentials_problem

    url, endpoint = "s3://bucket/runs/r/round-1/global.safetensors", "http://10.0.0.5:8333"
    fix = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    assert credentials_problem(url, endpoint, NoCredentialsError()) == (
        f"storage s3://bucket at {endpoint} needs credentials and found none: {fix}"
    )
    partial = PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY")
    assert credentials_problem(url, None, partial).startswith("storage s3://bucket at AWS needs")
    assert credentials_problem(url, endpoint, PermissionError("Forbidden")) == (
        f"storage s3://bucket at {endpoint} refused the credentials (Forbidden): {fix}"
    )
    assert credentials_problem("file:///srv/x", None, PermissionError("denied")) is None
    assert credentials_problem(url, endpoint, ConnectionRefusedError()) is None


def test_refused_credentials_are_not_retried_by_the_store_or_by_prefect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from decentralml.protocol.errors import StorageCredentialsError
    from tasks.policy import _retry_unless_permanent

    store = ArtifactStore("s3://bucket/x", endpoint_url="http://127.0.0.1:9", retries=Retries())
    calls: list[str] = []

    def forbidden(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
        raise PermissionError("Forbidden")  # what s3fs makes of a 403

    def refuse(url: str, max_bytes: int | None) -> bytes:
        calls.append(url)
        return store._guard(url, forbidden, "read")

    monkeypatch.setattr(store, "_read", refuse)
    with pytest.raises(StorageCredentialsError, match="refused the credentials"):
        store.get("s3://bucket/x/a")
    assert calls == ["s3://bucket/x/a"]  # one try: a refusal repeats until someone fixes it

    class _State:
        def result(self):
            raise StorageCredentialsError("refused")

    assert _retry_unless_permanent(None, None, _State()) is False


# --- the file:// read path (no fsspec) ------------------------------------------------------


def test_a_local_path_fsspec_writes_is_the_one_read_back(tmp_path: Path) -> None:
    """as_uri() percent-encodes; reads resolve the URL exactly as fsspec's writes do."""
    store = ArtifactStore((tmp_path / "with space %20").as_uri())
    url = store.url_for("r.safetensors")
    artifact = store.put(url, PAYLOAD)
    fs, path = fsspec.core.url_to_fs(url)
    assert fs.cat_file(path) == PAYLOAD
    assert store.get(url, artifact.sha256, max_bytes=len(PAYLOAD)) == PAYLOAD


def test_a_local_file_larger_than_its_size_says_stops_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file growing after its size was taken (injected: fstat reports 10 bytes) is still
    refused by the bounded read, which stops one byte past the limit."""
    import decentralml.io.storage as storage

    store = ArtifactStore(tmp_path.as_uri(), retries=NO_RETRIES)
    url = store.url_for("big.bin")
    store.put(url, b"x" * 10_000_000)
    asked: list[int] = []
    real_read = storage._read_at_most

    def spy(handle, limit, expected=None):  # type: ignore[no-untyped-def]
        data = real_read(handle, limit, expected)
        asked.append(len(data))
        return data

    shrunk = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 0, 0, 0, 10, 0, 0, 0))
    monkeypatch.setattr(storage.os, "fstat", lambda fd: shrunk)
    monkeypatch.setattr(storage, "_read_at_most", spy)
    with pytest.raises(ArtifactTooLarge, match="the read stopped there"):
        store.get(url, max_bytes=1000)
    assert asked == [1001]


def test_a_local_path_that_cannot_be_read_is_unavailable_not_missing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path.as_uri(), retries=NO_RETRIES)
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(StorageUnavailable, match="cannot read"):
        store.get(store.url_for("a-directory"), max_bytes=1000)
    with pytest.raises(ArtifactMissing):
        store.get(store.url_for("nothing-here"), max_bytes=1000)


class _DiesMidWrite:
    """A file handle that writes half of what it is given, then the process 'dies'."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        raise KeyboardInterrupt("killed mid-write")


def test_a_write_killed_midway_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outside crash test killed the creator while it wrote round-1.safetensors in place:
    the torn checkpoint made every rerun exit 'weights file is truncated'. A write is now whole
    or not at all: the checkpoint found afterwards is the previous one, and no partial file
    is left beside it."""
    from fsspec.implementations.local import LocalFileSystem

    store = ArtifactStore(tmp_path.as_uri())
    url = store.checkpoint_url("run", 1)
    store.put(url, b"old checkpoint")
    real_open = LocalFileSystem.open

    def dying_open(self, path, mode="rb", **kwargs):
        handle = real_open(self, path, mode, **kwargs)
        return _DiesMidWrite(handle) if "w" in mode else handle

    monkeypatch.setattr(LocalFileSystem, "open", dying_open)  # the fault, injected on purpose
    with pytest.raises(KeyboardInterrupt):
        store.put(url, b"new checkpoint, much longer than the old one" * 100)
    monkeypatch.undo()
    assert store.get(url) == b"old checkpoint"
    folder = tmp_path / "runs" / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["round-1.safetensors"]


def test_a_link_a_fifo_or_a_device_is_refused_unread_and_never_blocks(tmp_path: Path) -> None:
    """The outside tester put a symlink to /etc/passwd where its result belonged, and the
    creator's published reason leaked its first 8 bytes as a "header size"; a FIFO there
    blocked the review for good. Reads are of regular files only, and the refusal names no
    byte or size of anything else."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    store = ArtifactStore((tmp_path / "storage").as_uri(), retries=NO_RETRIES)
    folder = tmp_path / "storage" / "runs" / "r" / "round-1" / "results"
    folder.mkdir(parents=True)
    (folder / "submission-0.safetensors").symlink_to(secret)
    os.mkfifo(folder / "submission-1.safetensors")
    (folder / "submission-2.safetensors").symlink_to("/dev/zero")
    for sid in range(3):
        url = store.round_url("r", 1, f"results/submission-{sid}.safetensors")
        with pytest.raises(ArtifactMissing) as refused:
            store.get(url, max_bytes=1000)
        assert "root:x" not in str(refused.value) and "bytes" not in str(refused.value)


def test_a_folder_replaced_by_a_link_does_not_lead_a_read_out_of_the_store(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "submission-0.safetensors").write_bytes(b"someone else's file")
    store = ArtifactStore((tmp_path / "storage").as_uri(), retries=NO_RETRIES)
    round_dir = tmp_path / "storage" / "runs" / "r" / "round-1"
    round_dir.mkdir(parents=True)
    (round_dir / "results").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ArtifactMissing, match="not a regular file of this storage"):
        store.get(store.round_url("r", 1, "results/submission-0.safetensors"))


def test_a_store_rooted_at_one_file_reads_that_file(tmp_path: Path) -> None:
    """The seed API reads a task's package through a store rooted at the package itself."""
    store = ArtifactStore((tmp_path / "storage").as_uri())
    url = store.put(store.url_for("assets.tar.gz"), b"package").url
    assert ArtifactStore(url).get(url) == b"package"
