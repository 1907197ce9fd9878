"""Workloads published by another distribution under the entry-point group
``decentralml.workloads``: a real ``*.dist-info`` folder on sys.path, as pip leaves one, so
importlib.metadata finds them the way it would in an installed environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from decentralml.ml import workloads
from decentralml.ml.data import datasets
from decentralml.protocol.errors import ConfigError
from tests.helpers import ROOT, write_config
from tests.test_workloads import OWN_WORKLOAD

MODULE = "dml_published_workload"
ENTRY_POINTS = f"""
[decentralml.workloads]
half_planes = {MODULE}:WORKLOAD
gone = dml_no_such_module:WORKLOAD
not_one = {MODULE}:DATA
exploding = dml_exploding:WORKLOAD
mnist_mlp = {MODULE}:WORKLOAD
"""
ENTRY_NAMES = ("half_planes", "gone", "not_one", "exploding")  # mnist_mlp stays the built-in


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Path]:
    """``mypkg`` 0.1 installed into ``tmp_path``: its module, its metadata, its entry points.
    The folder is on sys.path for the test; what importing it cached is forgotten after."""
    site = tmp_path / "site"
    info = site / "mypkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / f"{MODULE}.py").write_text(textwrap.dedent(OWN_WORKLOAD))
    (site / "dml_exploding.py").write_text('raise RuntimeError("needs a GPU\\nsecond line")\n')
    sys.path.insert(0, str(site))
    for name in ENTRY_NAMES:  # an earlier test in this process may have registered its own
        datasets._DATASETS.pop(name, None)
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in (MODULE, "dml_exploding"):
            sys.modules.pop(name, None)
        for name in ENTRY_NAMES:
            workloads._IMPORTED.pop(name, None)
            datasets._DATASETS.pop(name, None)  # the next test's import registers its own


def test_a_published_workload_is_found_by_its_name(distribution: Path) -> None:
    assert set(workloads.published()) == set(ENTRY_NAMES)
    workload = workloads.get("half_planes")
    assert workload.name == "half_planes_mlp" and workload.dataset.name == "half_planes"
    assert workloads.dataset("half_planes") is workload.dataset  # its splits load here
    # Contributors get it as an architecture description, as a module:attribute workload.
    assert str(workloads.model_settings("half_planes", 0.01)["model"]).startswith("json-")


def test_a_built_in_name_is_not_taken_over_by_an_entry_point(distribution: Path) -> None:
    assert workloads.get("mnist_mlp").dataset.name == "mnist"
    assert "mnist_mlp" not in workloads.published()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("gone", "cannot be imported: No module named 'dml_no_such_module'"),
        ("not_one", "is a Dataset, not a Workload"),
        ("exploding", "cannot be imported: needs a GPU"),
    ],
)
def test_a_broken_entry_point_is_one_line_naming_it(distribution: Path, name, why) -> None:
    with pytest.raises(ConfigError) as refused:
        workloads.get(name)
    message = str(refused.value)
    assert message.startswith(f"workload {name!r} (entry point ")
    assert "of mypkg)" in message and message.endswith(why) and "\n" not in message


def test_an_unknown_name_lists_the_published_ones(distribution: Path) -> None:
    with pytest.raises(ConfigError, match=r"half_planes \(published\)"):
        workloads.get("nothing_by_this_name")


@pytest.mark.slow
def test_the_cli_lists_published_and_broken_workloads_and_refuses_a_broken_one(
    distribution: Path, tmp_path: Path
) -> None:
    """In a fresh process, as a user runs it: the listing goes on past broken entry points,
    and naming a broken one is one line and exit status 2, no traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(distribution), str(ROOT)])}
    command = [sys.executable, "-m", "decentralml_cli"]
    listed = subprocess.run([*command, "workloads"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert list(rows) == ["breast_cancer", "mnist_cnn", "mnist_mlp", *sorted(ENTRY_NAMES)]
    assert rows["half_planes"].split()[1:3] == ["half_planes", "accuracy"]
    for broken in ("gone", "not_one", "exploding"):
        assert rows[broken].startswith(f"{broken:<14} broken: workload '{broken}'")
    assert "mnist" in rows["mnist_mlp"]  # the built-in, not the published one

    config, _ = write_config(tmp_path)
    refused = subprocess.run(
        [*command, "demo", "--config", str(config), "--workload", "exploding"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: workload 'exploding' (entry point dml_exploding:WORKLOAD of mypkg) "
        "cannot be imported: needs a GPU"
    ]
