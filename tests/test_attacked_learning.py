"""bench/bench_attacked_learning.py: learning quality with 3 of 10 contributors attacking,
with and without the creator's screening (its smoke run on real MNIST, its table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench_attacked_learning.py"


def _bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


def _summary(strategy: str, case: str, final: float, attackers_in: int = 0) -> dict:
    return {
        "name": f"{strategy}/{case}",
        "strategy": strategy,
        "case": case,
        "rounds": 3,
        "final": final,
        "accuracy": [0.5, 0.7, final],
        "accepted_attackers": attackers_in,
        "accepted_honest": 21,
        "seconds": 60.0,
    }


def test_replot_tables_each_case_against_the_same_strategys_clean_run(tmp_path: Path) -> None:
    runs = [
        _summary("fedavg", "clean", 0.95),
        _summary("fedavg", "sign_flip/open", 0.10, 9),
        _summary("fedavg", "sign_flip/screened", 0.94, 0),
        _summary("median", "sign_flip/open", 0.93, 9),
    ]
    (tmp_path / "a.err").write_text(
        "fedavg/clean round 1: 0.5000 (20 s)\n" + "\n".join(json.dumps(r) for r in runs[:3]) + "\n"
    )
    finished = {"bench": "attacked_learning", "runs": runs[3:]}  # a whole sweep's last line
    (tmp_path / "b.out").write_text("| table |\n" + json.dumps(finished) + "\n")
    done = _bench("--replot", "a.err", "b.out", "--image", "out.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    fedavg = next(line for line in lines if line.startswith("| fedavg |"))
    assert fedavg == (
        "| fedavg | 0.9500 | 0.1000 (-0.8500) | 0.9400 (-0.0100), 0/9 attacker | not run "
        "| not run |"
    )
    median = next(line for line in lines if line.startswith("| median |"))
    assert median.startswith("| median | not run | 0.9300 | not run |")  # no clean run: no delta
    figures = json.loads(lines[-1])
    assert {r["name"] for r in figures["runs"]} == {r["name"] for r in runs}
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_name_that_matches_nothing_is_one_line_and_exit_2() -> None:
    done = _bench("--only", "nosuchstrategy/")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no run matches --only (see --list), or --rounds < 1"
    ]


@pytest.mark.slow
def test_one_screened_round_refuses_the_sign_flippers_and_keeps_learning(tmp_path: Path) -> None:
    """The creator's CustomAccept (update_norm, then holdout_gate) on one real round of the
    seed model: the 3 sign-flipped results are refused, the 7 honest ones kept."""
    done = _bench("--quick", "--image", str(tmp_path / "q.png"))
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout.strip().splitlines()[-1])["runs"][0]
    assert run["name"] == "fedavg/sign_flip/screened"
    assert (run["accepted_attackers"], run["accepted_honest"]) == (0, 7)
    assert run["final"] > 0.85, run


def test_a_whole_run_name_picks_that_run_and_a_part_picks_every_match() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_attacked_learning import select

    assert [r.name for r in select(["krum/clean"])] == ["krum/clean"]
    assert [r.name for r in select(["krum/sign_flip/open", "fedavg/clean"])] == [
        "krum/sign_flip/open",
        "fedavg/clean",
    ]
    assert {r.name for r in select(["krum/sign_flip"])} == {
        f"{s}/sign_flip/{c}" for s in ("krum", "multi_krum") for c in ("open", "screened")
    }
    assert len(select([])) == 6 * 5
