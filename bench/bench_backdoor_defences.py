"""Backdoor defences compared on the same whole demos (issue 16 part 4).

Run from the project root (about 10 minutes on 2 quiet cores):

    .venv/bin/python bench/bench_backdoor_defences.py --rounds 5

Each run is ``decentralml demo`` (the real engine: creator round, contributor procedure,
embedded marketplace, CustomAccept, ``payment_rule: value``): 10 contributors, IID MNIST, 1
local epoch, ``--rounds`` rounds, with 3 backdoor attackers (BadNets 3x3 corner patch
relabelled 0, on half of each attacker's shard) or none. The defences, each in front of
FedAvg:

* ``none``: FedAvg alone;
* ``norm_bound``: every update clipped to the round's median norm and Gaussian noise of
  0.001 x that bound per coordinate (Sun et al. 2019, "Can You Really Backdoor FL?");
* ``flame``: the majority cluster of update directions, clipped, noise 0.001 (Nguyen et al.
  2022, FLAME).

Printed per run: final clean accuracy, the backdoor's success on stamped test digits (a clean
model's is the baseline), what the attackers were paid per round over the honest mean, and
honest results refused. The last line is one JSON object with every run and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFENCES = {
    "none": {"name": "fedavg"},
    "norm_bound": {"name": "fedavg", "clip_norm_multiple": 1.0, "noise_multiple": 0.001},
    "flame": {"name": "fedavg", "backdoor_filter": "flame"},
}
RUNS = (("clean", "none"), ("backdoor", "none"), ("backdoor", "norm_bound"),
        ("backdoor", "flame"), ("clean", "flame"))  # fmt: skip


def one_run(attack: str, defence: str, rounds: int, workdir: Path) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
    config["strategy"] = DEFENCES[defence]
    config["marketplace"]["path"] = str(workdir / f"{attack}-{defence}.sqlite")
    config["storage"]["url"] = f"file://{workdir / f'{attack}-{defence}-storage'}"
    path = workdir / f"{attack}-{defence}.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = workdir / f"{attack}-{defence}.json"
    command = [sys.executable, "-m", "decentralml_cli", "demo", "--config", str(path),
               "--contributors", "10", "--epochs", "1", "--rounds", str(rounds),
               "--payment-rule", "value", "--summary-json", str(summary)]  # fmt: skip
    if attack != "clean":
        command += ["--attack", attack, "--attackers", "3"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(summary.read_text())
    return row(attack, defence, data, time.perf_counter() - started, rounds)


def row(attack: str, defence: str, data: dict, seconds: float, rounds: int) -> dict:
    subs = data["submissions"]
    honest = [s["paid"] for s in subs if s["role"] == "honest"]
    attackers = [s["paid"] for s in subs if s["role"] != "honest"]
    honest_mean = sum(honest) / max(len(honest), 1)
    return {
        "attack": attack,
        "defence": defence,
        "final_accuracy": data["final_accuracy"],
        "backdoor_success": data["attack"]["backdoor_success_rate"],
        # per attacker per round, over one honest result's mean pay
        "attacker_pay_over_honest": (
            sum(attackers) / (3 * rounds) / honest_mean if attackers and honest_mean else None
        ),
        "attacker_results_accepted": sum(
            s["verdict"] == "accepted" for s in subs if s["role"] != "honest"
        ),
        "honest_refused": data["attack"]["honest_rejected"],
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-backdoor-") as scratch:
        for attack, defence in RUNS:
            rows.append(one_run(attack, defence, args.rounds, Path(scratch)))
            print(json.dumps(rows[-1]), flush=True)
    clean = next(r for r in rows if r["attack"] == "clean" and r["defence"] == "none")
    for r in rows:  # against the undefended clean run of the same window
        r["success_over_clean_points"] = round(
            100 * (r["backdoor_success"] - clean["backdoor_success"]), 2
        )
        r["accuracy_vs_clean_points"] = round(
            100 * (r["final_accuracy"] - clean["final_accuracy"]), 2
        )
    print(json.dumps({"bench": "backdoor_defences", "rounds": args.rounds,
                      "command": " ".join(["bench/bench_backdoor_defences.py", *sys.argv[1:]]),
                      "runs": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
