"""decentralml installed from its wheel (not editable) works from any directory: the default
config, the contributor's assets and the workloads come from the installed package.

The wheel is built from a copy of the sources (packaging.project_wheel) and installed with
--no-deps into a fresh venv; the venv sees the shared venv's dependencies (TensorFlow,
Prefect) through a .pth line naming its site-packages. That line does not run the shared
venv's own .pth files, so its editable decentralml stays out of sight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from decentralml.io.packaging import project_wheel
from decentralml.protocol.errors import ConfigError
from decentralml.runtime.config import load_config
from decentralml.runtime.resources import config_path, contributor_assets, shipped
from tests.helpers import ROOT


def _files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_shipped_folders_are_the_top_level_ones() -> None:
    """One copy of each asset: the package's folders link to the user-facing ones."""
    assert shipped("assets").resolve() == (ROOT / "assets").resolve()
    assert shipped("configs").resolve() == (ROOT / "configs").resolve()
    assert (contributor_assets() / "start_task.sh").is_file()


def test_the_wheel_carries_every_asset_and_config(tmp_path: Path) -> None:
    """A file added under assets/ or configs/ that pyproject's package-data globs miss would
    be missing from an installed package: compare the wheel with the folders."""
    wheel = project_wheel(ROOT, tmp_path)
    assert wheel is not None
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for folder in ("assets", "configs"):
        expected = {f"decentralml/{folder}/{name}" for name in _files(ROOT / folder)}
        assert expected and expected <= names, sorted(expected - names)


def test_a_default_config_missing_from_the_cwd_is_the_shipped_one(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path("configs/mnist.yaml") == shipped("configs", "mnist.yaml")
    assert load_config("configs/mnist-substrate.yaml").marketplace.backend == "substrate"
    (tmp_path / "configs").mkdir()
    own = yaml.safe_load(shipped("configs", "mnist.yaml").read_text()) | {"rounds": 7}
    (tmp_path / "configs" / "mnist.yaml").write_text(yaml.safe_dump(own))
    assert load_config("configs/mnist.yaml").rounds == 7  # the user's copy in the cwd wins
    for missing in ("configs/mine.yaml", "mnist.yaml", str(tmp_path / "configs" / "x.yaml")):
        with pytest.raises(ConfigError, match=f"configuration file {missing} does not exist"):
            load_config(missing)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding decentralml from its wheel; returns its bin folder."""
    scratch = tmp_path_factory.mktemp("installed")
    wheel = project_wheel(ROOT, scratch / "wheels")
    assert wheel is not None
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # pip runs with the new venv's interpreter before it sees the shared packages, so it
    # neither finds nor touches the shared venv's (editable) decentralml.
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    # Away from the project: run from its root, `python -m pip` would find the editable
    # install's decentralml.egg-info on sys.path and install nothing ("already satisfied").
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = [*pip, "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)]
    subprocess.run(install, check=True, cwd=scratch, env=clean_env)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    shared = Path(sysconfig.get_paths()["purelib"]).resolve()  # not via the worktree's link
    (site / "shared-dependencies.pth").write_text(f"{shared}\n")
    return venv / "bin"


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DECENTRALML_DATA_DIR")}
    env |= {"PREFECT_HOME": str(cwd / ".prefect"), "KERAS_HOME": str(cwd / ".keras")}
    return subprocess.run(
        [str(installed / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_installed_package_runs_a_demo_from_an_empty_directory(installed, tmp_path) -> None:
    where = _run(installed, tmp_path, "python", "-c", _WHERE)
    assert where.returncode == 0, where.stderr
    for path in json.loads(where.stdout):
        assert Path(path).is_relative_to(installed.parent), path  # nothing from the worktree

    listed = _run(installed, tmp_path, "decentralml", "workloads")
    assert listed.returncode == 0, listed.stderr
    assert {"mnist_mlp", "mnist_cnn", "breast_cancer"} <= _first_words(listed.stdout)

    missing = _run(installed, tmp_path, "decentralml", "demo", "--config", "mine.yaml")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: configuration file mine.yaml does not exist"

    demo = _run(
        installed,
        tmp_path,
        *("decentralml", "demo", "--workload", "breast_cancer", "--rounds", "1"),
        *("--contributors", "2", "--epochs", "2", "--summary-json", "summary.json"),
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    (row,) = json.loads((tmp_path / "summary.json").read_text())["rounds"]
    assert len(row["accepted"]) == 2 and not row["rejected"]
    assert not (tmp_path / "configs").exists()  # the default config came from the package
    (package,) = (tmp_path / ".decentralml").rglob("*.tar.gz")  # the shipped config's storage
    with tarfile.open(package) as archive:
        names = archive.getnames()
    assert "model_contributor.py" in names and "start_task.sh" in names
    # Installed, there are no sources to build a wheel from: the package carries none, and
    # start_task.sh asks for DECENTRALML_PYTHON (README, "Contributors").
    assert not [name for name in names if name.startswith("wheels/")]


_WHERE = """
import json, decentralml, decentralml_cli, flows, tasks
from decentralml.runtime.resources import contributor_assets, config_path
print(json.dumps([decentralml.__file__, decentralml_cli.__file__, flows.__file__, tasks.__file__,
                  str(contributor_assets().resolve()),
                  str(config_path("configs/mnist.yaml").resolve())]))
"""


def _first_words(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip()}
