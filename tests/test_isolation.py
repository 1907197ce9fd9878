"""The suite's own isolation: one test's imports must not break the next test's capture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

ORDER = """
def test_imports_tensorflows_logging_first():
    import absl.logging  # noqa: F401  what TensorFlow's import registers: a handler on stderr


def test_then_prefect_under_capsys(capsys):
    from prefect import flow  # noqa: F401  Prefect configures logging at this import
    print("still writable")
    assert capsys.readouterr().out == "still writable\\n"
"""


def test_prefect_imported_after_tensorflow_leaves_the_capture_open(tmp_path: Path) -> None:
    """tests/test_cli.py's capsys test failed ("I/O operation on closed file") and pytest
    crashed at exit whenever it came right after a test that imported TensorFlow in-process
    (tests/test_light_install.py): Prefect's logging configuration closed absl's handler, and
    that closed the stream absl had taken, pytest's capture file. The session's conftest
    imports Prefect first; this runs the two steps in a pytest of their own with it."""
    (tmp_path / "test_order.py").write_text(ORDER)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:randomly",
         "-p", "no:cacheprovider", "-n", "0", str(tmp_path / "test_order.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
