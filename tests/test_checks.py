"""decentralml.runtime.checks: a loaded config checked against this machine, one line per problem.

The CLI's view of these (exit status 2, nothing published) is in tests/test_cli.py; here each
check on its own, and the runtime's own refusal when a check was skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from decentralml.protocol.errors import ConfigError
from decentralml.runtime import checks
from decentralml.runtime.backends import open_marketplace
from decentralml.runtime.checks import check_config
from decentralml.runtime.config import MarketplaceConfig, parse_config
from tests.helpers import small_config


def _config(tmp_path: Path, **overrides: object):
    return parse_config(small_config(tmp_path, **overrides), "run.yaml")


def _refusal(config, uses=checks.DEMO) -> str:
    with pytest.raises(ConfigError) as error:
        check_config(config, uses, source="run.yaml")
    return str(error.value)


def test_the_shipped_config_passes_every_check_and_leaves_only_folders(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert check_config(config) is config
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["storage"]  # the probes' files are gone; the marketplace is not created


def test_several_problems_are_one_line_each(tmp_path: Path) -> None:
    config = _config(tmp_path, **{"model.name": "resnet9000", "storage.url": "zz://b"})
    assert _refusal(config).splitlines() == [
        "invalid configuration in run.yaml:",
        "  model.name: unknown workload 'resnet9000'; built-in workloads: breast_cancer, "
        "mnist_cnn, mnist_mlp (or package.module:attribute for your own)",
        "  storage.url: no storage backend for zz://b: fsspec knows no protocol 'zz' "
        "(file://, s3://, memory:// ... see fsspec.available_protocols())",
    ]


def test_a_validator_module_that_fails_while_loading_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_validator.py").write_text("raise RuntimeError('needs a GPU')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _config(tmp_path, **{"task.custom_validator": "broken_validator:judge"})
    assert _refusal(config) == (
        "invalid configuration in run.yaml: task.custom_validator: custom validator module "
        "'broken_validator' cannot be imported: needs a GPU"
    )


def test_a_custom_validator_is_loaded_only_when_custom_accept_runs_it(tmp_path: Path) -> None:
    config = _config(tmp_path, **{"task.custom_validator": "tests.custom_validators:always"})
    check_config(config)
    manual = _config(tmp_path, **{"task.validation_strategy": "ManualAccept"})
    check_config(manual)  # no decisions file: the creator is asked at the prompt


def test_a_decisions_file_that_does_not_parse_is_refused_before_the_round(tmp_path: Path) -> None:
    decisions = tmp_path / "decisions.yaml"
    decisions.write_text("0: {accept: maybe}\n")
    config = _config(
        tmp_path,
        **{"task.validation_strategy": "ManualAccept", "task.manual_decisions": str(decisions)},
    )
    assert "task.manual_decisions: " in _refusal(config, checks.CREATE)
    check_config(config, checks.PUBLISH)  # publish: the file may be written after the results
    decisions.write_text("0: {accept: true}\n")
    check_config(config, checks.CREATE)


def test_a_file_that_is_not_sqlite_is_refused_as_the_marketplace(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a marketplace")
    config = _config(tmp_path, **{"marketplace.path": str(notes)})
    assert _refusal(config, checks.READ) == (
        f"invalid configuration in run.yaml: marketplace.path: {notes} is not a SQLite file; "
        "name a new file or the existing one"
    )


def test_the_runtime_names_the_field_when_sqlite_refuses_the_file(tmp_path: Path) -> None:
    """Without the checks (a library caller), the marketplace still fails as a ConfigError."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a marketplace" * 100)
    with pytest.raises(ConfigError, match=r"^marketplace\.path: .* cannot be opened as a SQLite"):
        open_marketplace(MarketplaceConfig(path=str(notes)))


def test_only_the_backends_own_file_is_checked(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unused_index = {"marketplace.index_path": str(blocker / "index.sqlite")}
    check_config(_config(tmp_path, **unused_index), checks.READ)  # embedded: index unused
    substrate = _config(tmp_path, **unused_index, **{"marketplace.backend": "substrate"})
    assert _refusal(substrate, checks.READ) == (
        f"invalid configuration in run.yaml: marketplace.index_path: {blocker} is a file, so "
        f"folder {blocker} cannot be created; pick another"
    )


@pytest.mark.parametrize("url", ["memory://runs", "s3://bucket/runs"])
def test_remote_storage_is_not_contacted(tmp_path: Path, url: str) -> None:
    check_config(_config(tmp_path, **{"storage.url": url}))
