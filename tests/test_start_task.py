"""The contributor package as shipped: unpack it and run ./start_task.sh for real."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from decentralml.contributor import result_url
from decentralml.creator import create_round_task, task_settings, upload_assets, upload_global
from decentralml.creator.session import open_session
from decentralml.io.packaging import (
    MAX_PACKAGE_BYTES,
    build_package,
    project_wheel,
    unpack_package,
)
from decentralml.io.storage import sha256_hex
from decentralml.protocol.accounts import contributor_dev_keypair
from decentralml.protocol.records import ResultSubmissionStatus
from decentralml.runtime.config import RunConfig
from decentralml.validation import screen
from tests.helpers import ROOT, write_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_start_task_trains_and_submits(tmp_path):
    config_path, config = write_config(tmp_path, contributors=4, **{"task.max_assignments": 2})
    session = open_session(config, run="start-task")
    creator, market = session.creator, session.creator.market
    task_id = create_round_task(
        creator, 1, upload_assets(creator, 1), upload_global(creator, 1, session.global_tensors)
    )
    task = market.get_task(task_id)
    package_dir = tmp_path / "package"
    unpack_package(creator.store.get(task.spec.assets_path, task.spec.assets_sha256), package_dir)

    env = {
        **os.environ,
        "DECENTRALML_PYTHON": sys.executable,
        "DECENTRALML_CONTRIBUTOR_URI": "//Bob",
    }
    done = subprocess.run(
        [
            "./start_task.sh",
            "--task-id",
            str(task_id),
            "--shard-index",
            "1",
            "--config",
            str(config_path),
        ],
        cwd=package_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    [submission] = market.list_task_results(task_id)
    assert submission.worker == contributor_dev_keypair(0).ss58_address
    assert submission.status is ResultSubmissionStatus.PendingValidation
    stored = creator.store.get(submission.result.result_path)
    assert sha256_hex(stored) == submission.result.sha256
    assert 10_000 < submission.result.num_examples < 15_000  # a quarter of the 55 000 pool
    location = result_url(task, submission.submission_id)
    tensors = screen(submission, creator.store.get, session.layout, location, 10**8)
    assert isinstance(tensors, dict), tensors
    assert session.evaluate_tensors(tensors, session.test)["accuracy"] > 0.85
    assert str(ROOT) not in (package_dir / "task.json").read_text()  # no local paths shipped


# --- the package's installer: a wheel of this project, pinned requirements, no half-made venv


PACKAGE_ASSETS = ROOT / "assets" / "mnist" / "model_contributor"
SHARED_SITE = Path(sysconfig.get_paths()["purelib"])


def test_requirements_pin_every_dependency_of_the_project() -> None:
    """requirements.txt resolves from PyPI (no decentralml in it) and pins each of the
    project's dependencies to a version its own specifier accepts."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (PACKAGE_ASSETS / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    assert "decentralml" not in pins
    for dependency in map(Requirement, project["dependencies"]):
        pinned = pins.get(canonicalize_name(dependency.name))
        assert pinned is not None, f"{dependency.name} is not pinned in requirements.txt"
        assert dependency.specifier.contains(pinned), f"{dependency} does not allow {pinned}"


def test_the_wheel_is_built_once_reproducibly_and_shipped(tmp_path: Path) -> None:
    wheel = project_wheel(ROOT, tmp_path / "cache")
    assert wheel is not None and wheel.name.startswith("decentralml-")
    built_at = wheel.stat().st_mtime_ns
    assert project_wheel(ROOT, tmp_path / "cache") == wheel  # cached: not built again
    assert wheel.stat().st_mtime_ns == built_at
    again = project_wheel(ROOT, tmp_path / "elsewhere")
    assert again.read_bytes() == wheel.read_bytes()  # same sources, same bytes
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "decentralml/contributor/procedure.py",
        "flows/contributor.py",
        "tasks/policy.py",
    } <= names
    assert project_wheel(tmp_path, tmp_path / "cache") is None  # no sources: no wheel

    package = build_package(PACKAGE_ASSETS, {"model": "mnist_mlp"}, wheels=(wheel,))
    unpack_package(package, tmp_path / "package")
    assert (tmp_path / "package" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    assert len(package) < MAX_PACKAGE_BYTES // 64  # ~0.35 MB today: the code, not the data


def _site_packages_view(target: Path) -> Path:
    """This environment's packages without decentralml (and pip): what a contributor's machine
    would have downloaded, so the install needs no network and the wheel is the only
    decentralml in sight."""
    target.mkdir()
    skipped = ("decentralml", "__editable__", "pip", "setuptools", "_distutils_hack")
    for entry in SHARED_SITE.iterdir():
        if not entry.name.startswith(skipped) and not entry.name.endswith(".pth"):
            (target / entry.name).symlink_to(entry)
    return target


def _start_task(package_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        ["./start_task.sh", *args],
        cwd=package_dir,
        env={**base, "DECENTRALML_PIP_ARGS": "--no-index", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_failed_install_is_retried_from_scratch_and_the_venv_holds_the_wheel(
    tmp_path: Path,
) -> None:
    wheel = project_wheel(ROOT, ROOT / ".cache" / "wheels")
    package_dir = tmp_path / "package"
    settings = task_settings(RunConfig()).dump()
    unpack_package(build_package(PACKAGE_ASSETS, settings, (wheel,)), package_dir)
    venv = package_dir / ".venv"
    stale = venv / "bin" / "python"  # a half-made venv an older start_task.sh left behind
    stale.parent.mkdir(parents=True)
    stale.write_text(f"#!/bin/sh\ntouch {tmp_path / 'stale-used'}\n")
    stale.chmod(0o755)

    failed = _start_task(package_dir, "--help")  # offline, nothing to install from
    assert failed.returncode != 0
    assert "No matching distribution found for tensorflow-cpu==2.21.0" in failed.stderr
    assert not (package_dir / ".venv.partial").exists()  # nothing half-made kept
    assert not (venv / ".installed").exists() and not (tmp_path / "stale-used").exists()

    view = _site_packages_view(tmp_path / "site-view")
    done = _start_task(package_dir, "--help", PYTHONPATH=str(view))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--task-id" in done.stdout and "installing" in done.stderr
    assert (venv / ".installed").is_file() and not (tmp_path / "stale-used").exists()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import decentralml; print(decentralml.__file__)"],
        env={"PYTHONPATH": str(view), "PATH": os.environ["PATH"]},
        cwd=tmp_path,  # not the project folder, whose decentralml would come first
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv / "lib")), where.stdout  # the shipped wheel's copy

    reused = _start_task(package_dir, "--help", PYTHONPATH=str(view))
    assert reused.returncode == 0 and "installing" not in reused.stderr  # installed once
