"""The `decentralml` command as a user runs it: a subprocess with a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from decentralml.protocol.accounts import contributor_dev_keypair
from decentralml_cli import _config, build_parser, main
from decentralml_cli.commands import inspect as inspect_commands
from tests.helpers import ROOT, small_config, write_config


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "decentralml_cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_config_names_the_field(tmp_path):
    path, _ = write_config(tmp_path)
    path.write_text(path.read_text().replace("batch_size: 32", "batch_size: -4"))
    done = run_cli("tasks", "--config", str(path))
    assert done.returncode == 2
    assert "training.batch_size" in done.stderr and "greater than 0" in done.stderr


def test_missing_config_file_is_reported(tmp_path):
    done = run_cli("tasks", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "does not exist" in done.stderr


@pytest.mark.slow
def test_demo_writes_summary_and_pays_each_accepted_contributor_once(tmp_path):
    path, _ = write_config(tmp_path, **{"task.pays_amount": 1000})
    summary_path = tmp_path / "summary.json"
    done = run_cli(
        "demo",
        "--config",
        str(path),
        "--rounds",
        "2",
        "--contributors",
        "2",
        "--summary-json",
        str(summary_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["final_accuracy"] == summary["rounds"][-1]["accuracy"] > 0.9  # kept fields
    last = summary["rounds"][-1]
    assert summary["metric_name"] == last["metric_name"] == "accuracy"  # mnist_mlp's metric
    assert summary["final_metric"] == last["metric"] == last["metrics"]["accuracy"]
    assert all(len(r["accepted"]) == 2 and not r["rejected"] for r in summary["rounds"])
    workers = {contributor_dev_keypair(i).ss58_address for i in range(2)}
    assert {p["contributor"] for p in summary["payments"]} == workers
    for payment in summary["payments"]:  # 2 rounds x (1000 // 2 slots), paid once each
        assert payment["amount"] == payment["balance_change"] == 1000
    assert "round  task  accuracy" in done.stdout and "final test accuracy" in done.stdout

    listed = run_cli("results", "0", "--config", str(path))
    assert listed.returncode == 0 and listed.stdout.count("Accepted") == 2
    balance = run_cli("balance", "//Bob", "--config", str(path))
    assert balance.stdout.split() == [contributor_dev_keypair(0).ss58_address, "1000"]


@pytest.mark.slow
def test_creator_and_contributor_in_separate_processes(tmp_path):
    """publish → (another process) contribute → round, sharing SQLite and file storage."""
    path, _ = write_config(tmp_path, **{"task.max_assignments": 1, "contributors": 3})
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    contributor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "decentralml_cli",
            "contribute",
            "--config",
            str(path),
            "--index",
            "2",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        published = run_cli("publish", "--config", str(path), "--round", "1", "--run", "cli")
        assert published.returncode == 0, published.stderr[-3000:]
        assert "published as task 0" in published.stdout
        out, err = contributor.communicate(timeout=600)
    finally:
        contributor.kill()
    assert contributor.returncode == 0, err[-3000:]
    assert "contributed to 1 task(s)" in out

    decisions = tmp_path / "decisions.yaml"
    decisions.write_text("0: {accept: true, reason: checked by hand}\n")
    settled = run_cli(
        "round",
        "0",
        "--config",
        str(path),
        "--run",
        "cli",
        "--validation",
        "ManualAccept",
        "--decisions",
        str(decisions),
    )
    assert settled.returncode == 0, settled.stderr[-3000:]
    row = settled.stdout.strip().splitlines()[-1].split()
    assert row[:2] == ["1", "0"] and float(row[2]) > 0.8 and row[3:] == ["1", "0", "0"]
    balance = run_cli("balance", contributor_dev_keypair(2).ss58_address, "--config", str(path))
    assert balance.stdout.split()[1] == str(1_000_000)
    results = run_cli("results", "0", "--config", str(path))
    assert "Accepted" in results.stdout and "checked by hand" in results.stdout


# --- bad config values: refused at load, in-process, before anything is published ------------


def _regular_file(tmp_path: Path) -> Path:
    """A file where a folder would have to be: no one, not even root, can create under it."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker


BAD_VALUES = {  # name: (command, overrides of the small config, the field the error names)
    "unknown model": ("train", {"model.name": "resnet9000"}, "model.name"),
    "unknown strategy": ("train", {"strategy": {"name": "fedmagic"}}, "strategy"),
    "unknown strategy parameter": (
        "train",
        {"strategy": {"name": "fedadam", "lr": 1}},
        "strategy.fedadam.lr",
    ),
    "unknown storage protocol": ("publish", {"storage.url": "nosuchproto://b/runs"}, "storage.url"),
    "storage root not creatable": (
        "train",
        {"storage.url": lambda tmp: (_regular_file(tmp) / "storage").as_uri()},
        "storage.url",
    ),
    "custom validator not importable": (
        "train",
        {"task.custom_validator": "nosuch.module:fn"},
        "task.custom_validator",
    ),
    "custom validator not callable": (
        "publish",
        {"task.custom_validator": "decentralml.runtime.config:DEFAULT_VALIDATORS"},
        "task.custom_validator",
    ),
    "more contributors than slots": (
        "demo",
        {"contributors": 8, "task.max_assignments": 3},
        "contributors",
    ),
    "marketplace folder not creatable": (
        "tasks",
        {"marketplace.path": lambda tmp: str(_regular_file(tmp) / "m.sqlite")},
        "marketplace.path",
    ),
    "marketplace path is a folder": (
        "train",
        {"marketplace.path": lambda tmp: str(tmp)},
        "marketplace.path",
    ),
    "index folder not creatable": (
        "contribute",
        {
            "marketplace.backend": "substrate",
            "marketplace.index_path": lambda tmp: str(_regular_file(tmp) / "index.sqlite"),
        },
        "marketplace.index_path",
    ),
    "decisions file missing": (
        "round",
        {
            "task.validation_strategy": "ManualAccept",
            "task.manual_decisions": lambda tmp: str(tmp / "no-such-decisions.yaml"),
        },
        "task.manual_decisions",
    ),
}


def _published_nothing(tmp_path: Path) -> bool:
    market = tmp_path / "marketplace.sqlite"
    stored = [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    if stored:
        return False
    if not market.exists():
        return True
    from decentralml.marketplace.embedded import EmbeddedMarketplace

    return EmbeddedMarketplace(market).list_tasks(open_only=False) == []


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_is_one_line_and_status_2_before_anything_is_published(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    for variable, key in (("CREATOR", "//Alice"), ("CONTRIBUTOR", "//Bob")):  # as on a chain
        monkeypatch.setenv(f"DECENTRALML_{variable}_URI", key)
    command, overrides, field = BAD_VALUES[case]
    values = {k: v(tmp_path) if callable(v) else v for k, v in overrides.items()}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config(tmp_path, **values)))
    extra = ["0"] if command == "round" else []
    code = main([command, *extra, "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: invalid configuration in {path}: {field}: "), err
    assert _published_nothing(tmp_path)


def test_train_checks_its_custom_validator_before_it_publishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tester's case: a validator that cannot load was found only after the task was
    published and the round's wait ended. Now the training never starts."""
    import flows.creator
    from decentralml.marketplace.embedded import EmbeddedMarketplace

    path, config = write_config(tmp_path, **{"task.custom_validator": "tests.nosuch:fn"})
    market = EmbeddedMarketplace(config.marketplace.path)  # an existing marketplace
    started = []
    monkeypatch.setattr(flows.creator, "train", lambda *a, **k: started.append(a))
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "task.custom_validator: custom validator module 'tests.nosuch'" in err
    assert started == [] and market.list_tasks(open_only=False) == []


def test_listing_commands_check_only_what_they_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tasks` opens only the marketplace: a model name it never reads does not stop it."""
    path, _ = write_config(tmp_path, **{"model.name": "resnet9000"})
    assert main(["tasks", "--config", str(path)]) == 0
    assert capsys.readouterr().out.split()[:2] == ["id", "status"]


def test_demo_contributors_flag_sets_the_slots_too(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, **{"task.max_assignments": 3})
    args = build_parser().parse_args(["demo", "--config", str(path), "--contributors", "8"])
    config = _config(args)
    assert (config.contributors, config.task.max_assignments) == (8, 8)


def test_more_contributors_than_slots_is_fine_for_a_real_training(tmp_path: Path) -> None:
    """Outside the demo the contributors are strangers: the fastest take the slots."""
    path, _ = write_config(tmp_path, **{"contributors": 8, "task.max_assignments": 3})
    args = build_parser().parse_args(["train", "--config", str(path)])
    assert _config(args).contributors == 8


def test_ctrl_c_is_one_line_and_status_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_commands, "cmd_tasks", interrupted)
    path, _ = write_config(tmp_path)
    assert main(["tasks", "--config", str(path)]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_an_empty_config_file_publishes_nothing(tmp_path: Path, capsys) -> None:
    """An empty YAML given to publish used to publish a real task with every default
    (escrowing 1 000 000): it is now one line, exit 2, and the marketplace stays empty."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["publish", "--round", "1", "--config", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is empty" in err and "Traceback" not in err


def test_a_negative_shard_index_is_refused_at_once(tmp_path: Path, capsys) -> None:
    """``contribute --index -1`` idled forever."""
    path, _ = write_config(tmp_path)
    assert main(["contribute", "--index", "-1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--index must be 0 or more" in err


def test_a_contributor_pointed_at_a_missing_folder_creates_nothing(tmp_path: Path, capsys) -> None:
    """``contribute --marketplace /nonexistent/dir/m.sqlite`` created that folder and an empty
    ledger, then waited forever."""
    missing = tmp_path / "nonexistent" / "dir" / "m.sqlite"
    path, _ = write_config(tmp_path)
    assert main(["contribute", "--marketplace", str(missing), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "nonexistent").exists()
