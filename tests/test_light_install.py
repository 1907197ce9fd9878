"""A contributor's light install: ``pip install decentralml`` (no extras) is all a stranger
needs to contribute. The packages only the creator, the demo's Dask cluster or S3 storage use
are extras (pyproject.toml); here they are blocked from import and the contributor still works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT, write_config

EXTRAS_ONLY = ("matplotlib", "sklearn", "scipy", "threadpoolctl", "tqdm")
EXTRAS_ONLY += ("dask", "distributed", "prefect_dask", "s3fs")
"""Top-level modules of the ``creator``, ``dask`` and ``s3`` extras."""

BLOCK_THEN = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed (an extra's package)")
        return None

sys.meta_path.insert(0, Blocked())
"""


def _without_extras(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter where the extras' modules cannot be imported."""
    program = BLOCK_THEN.format(blocked=set(EXTRAS_ONLY)) + code
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def test_the_base_set_leaves_the_extras_out_and_dev_has_them_all() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base, extras = _names(project["dependencies"]), project["optional-dependencies"]
    heavy = {"matplotlib", "scikit-learn", "scipy", "prefect-dask", "s3fs", "tqdm"}
    assert not base & heavy
    assert heavy <= _names(extras["creator"]) | _names(extras["dask"]) | _names(extras["s3"])
    [itself] = [Requirement(r) for r in extras["dev"] if r.startswith("decentralml")]
    assert itself.extras == set(extras) - {"dev"}  # `make venv` (.[dev]) installs everything


def test_the_contributor_imports_none_of_the_extras() -> None:
    """The agent's flow, the CLI with its parser and the packaged task script's imports."""
    done = _without_extras(
        "import flows.contributor, decentralml.contributor.procedure\n"
        "import runpy, types; settings = types.ModuleType('settings')\n"
        "settings.__getattr__ = lambda name: 1  # task.json's values, unused by imports\n"
        "sys.modules['settings'] = settings\n"
        "runpy.run_path('assets/mnist/model_contributor/model_contributor.py')\n"
        "from decentralml_cli import main\n"
        "sys.exit(main(['contribute', '--help']))\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--marketplace" in done.stdout


@pytest.mark.slow
def test_a_contribution_runs_without_the_extras(tmp_path: Path) -> None:
    """A real task published by the creator (in this process, with every package), taken and
    trained by ``decentralml contribute`` in a process without the extras."""
    from decentralml.creator import create_round_task, upload_assets, upload_global
    from decentralml.creator.session import open_session

    path, config = write_config(tmp_path, **{"task.max_assignments": 1, "contributors": 2})
    session = open_session(config, run="light")
    creator = session.creator
    create_round_task(
        creator, 1, upload_assets(creator, 1), upload_global(creator, 1, session.global_tensors)
    )
    done = _without_extras(
        "from decentralml_cli import main\nsys.exit(main())\n",
        *("contribute", "--config", str(path), "--max-tasks", "1"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "contributed to 1 task(s)" in done.stdout


def test_a_task_needing_an_extra_says_which_package_in_one_line() -> None:
    """The breast_cancer workload's table ships inside scikit-learn (the creator extra)."""
    done = _without_extras(
        "from decentralml.ml.data import breast_cancer\n"
        "from decentralml.protocol.errors import DataError\n"
        "try:\n    breast_cancer.load()\n"
        "except DataError as error:\n    print(error)\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pip install scikit-learn" in done.stdout and done.stdout.count("\n") == 1
