"""Shared builders for tests that run real rounds: a small config in tmp folders."""

from __future__ import annotations

from pathlib import Path

import yaml
from substrateinterface import Keypair

from decentralml.marketplace.base import Marketplace
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.records import TaskResult
from decentralml.runtime.config import RunConfig, parse_config

ROOT = Path(__file__).resolve().parent.parent


def small_config(tmp_path: Path, **overrides: object) -> dict:
    """configs/mnist.yaml, shrunk for tests, with its state in ``tmp_path``."""
    data = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
    data["marketplace"]["path"] = str(tmp_path / "marketplace.sqlite")
    data["storage"]["url"] = (tmp_path / "storage").as_uri()
    data["training"]["epochs"] = 1
    data["rounds"] = 1
    data["round_timeout_seconds"] = 300
    data["poll_seconds"] = 0.2
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def write_config(tmp_path: Path, **overrides: object) -> tuple[Path, RunConfig]:
    data = small_config(tmp_path, **overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, parse_config(data, str(path))


def commit_and_send(market: Marketplace, worker: Keypair, sid: int, result: TaskResult) -> None:
    """Commit to ``result`` and send it: the two steps every result takes (commit-reveal)."""
    market.commit_result(worker, sid, result_commitment(worker.ss58_address, result.sha256))
    market.send_task_result(worker, sid, result)


class FakeClock:
    """A monotonic clock that moves only when code sleeps on it: pass ``clock`` as the time
    source and ``clock.sleep`` as the sleep, then assert on ``clock.sleeps``, the exact waits
    asked for, instead of on how long the machine took."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep length must be non-negative, got {seconds}")
        self.sleeps.append(seconds)
        self.now += seconds
