"""Learning quality under attack: each strategy's final test accuracy with 3 of 10
contributors attacking, with and without the creator's screening, against the same strategy
with no attacker in the same run (issue 10).

Run from the project root:

    nice -n 10 .venv/bin/python bench/bench_attacked_learning.py               # every run
    .venv/bin/python bench/bench_attacked_learning.py --only fedavg/           # runs named so
    .venv/bin/python bench/bench_attacked_learning.py --quick                  # 1 round smoke
    .venv/bin/python bench/bench_attacked_learning.py --replot OUT...           # no training

The rounds are bench_learning.py's (same Lab, seed weights, ``ReusableTrainer`` with Adam 1e-3
restarted each round, IID shards, 10 contributors, 1 epoch, B = 32, 10 rounds); the last 3
contributors attack (decentralml.simulation.attacks: ``sign_flip`` and ``scaled``, both ×10,
each applied to the attacker's own honest training). "screened" runs the creator's CustomAccept
exactly as its review does: ``make_policy`` of the default task config (update_norm, then
holdout_gate), its ``decide_round`` on the round's candidates with each claim capped by
``allowed_weights``, evaluated on the creator's held-out split; only the accepted results reach
the strategy. "open" gives the strategy every result (AutoAccept on well-formed, original
weights: attackers here send both). Storage, the marketplace and originality are left out: none
changes what these attackers achieve.

Strategies: fedavg, median, trimmed_mean (trim 0.3 per side), krum and multi_krum (f = 3),
and fedavg with ``clip_norm_multiple`` 2 (NormClipped).

Output: a Markdown table (final accuracy per strategy and case, and its difference from the
same strategy without attackers), one PNG (``--image``), then ONE JSON line. Each run's JSON
summary goes to stderr when it ends, so a sweep cut short or split over processes is tabled
with ``--replot``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import CONTRIBUTORS, ROOT, Lab, initial_tensors

ROUNDS = 10
ATTACKERS = 3
ATTACKS = ("sign_flip", "scaled")
STRATEGIES: dict[str, dict[str, object]] = {
    "fedavg": {"name": "fedavg"},
    "median": {"name": "median"},
    "trimmed_mean": {"name": "trimmed_mean", "trim_ratio": 0.3},
    "krum": {"name": "krum", "byzantine": ATTACKERS},
    "multi_krum": {"name": "multi_krum", "byzantine": ATTACKERS},
    "fedavg+clip2": {"name": "fedavg", "clip_norm_multiple": 2.0},
}
CASES = ("clean", *(f"{a}/{s}" for a in ATTACKS for s in ("open", "screened")))


@dataclass(frozen=True)
class Run:
    """One training: a strategy, the attack of the last ATTACKERS contributors (or none), and
    whether the creator's CustomAccept screens the results."""

    strategy: str
    attack: str | None
    screened: bool

    @property
    def case(self) -> str:
        if self.attack is None:
            return "clean/screened" if self.screened else "clean"
        return f"{self.attack}/{'screened' if self.screened else 'open'}"

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.case}"


def all_runs() -> list[Run]:
    """Most telling first, so a sweep cut short by the clock has the comparisons that matter:
    each strategy's clean baseline and its sign_flip runs, then the scaled runs."""
    runs = []
    for attacks in ((None, "sign_flip"), ("scaled",)):
        for strategy in STRATEGIES:
            for attack in attacks:
                runs += [Run(strategy, attack, False)]
                if attack is not None:
                    runs += [Run(strategy, attack, True)]
    return runs


def select(wanted: Sequence[str]) -> list[Run]:
    """The runs named, in the order asked for (a sweep cut short by the clock has run what
    came first): a whole name picks that run alone (krum/clean is inside multi_krum/clean),
    any other text every run whose name contains it; nothing asked: every run."""
    if not wanted:
        return all_runs()
    names = {r.name for r in all_runs()}
    chosen = [r for w in wanted for r in all_runs() if (w == r.name if w in names else w in r.name)]
    return list(dict.fromkeys(chosen))


def strategy_for(label: str):
    from decentralml.runtime.config import parse_config
    from decentralml.strategies import get_strategy

    return get_strategy(parse_config({"strategy": STRATEGIES[label]}).strategy)


def screen_round(
    round_number: int,
    global_tensors: Mapping[str, np.ndarray],
    results: Sequence[tuple[dict[str, np.ndarray], int]],
    evaluate: Callable[[Mapping[str, np.ndarray]], dict],
) -> list[bool]:
    """The creator's CustomAccept verdicts on this round's results, as its review reaches
    them: default validators, claims capped, the round's view of the updates."""
    from decentralml.protocol.records import ResultSubmissionStatus, Submission
    from decentralml.runtime.config import TaskConfig
    from decentralml.validation import Candidate, RoundView, allowed_weights, make_policy

    task = TaskConfig(validation_strategy="CustomAccept")
    policy = make_policy(task)
    weights = allowed_weights([n for _, n in results], task.examples_cap_multiple, None)
    pending = ResultSubmissionStatus.PendingValidation
    candidates = [
        Candidate(
            Submission(i, round_number, f"c{i}", pending, 0), tensors, evaluate, weight=weight
        )
        for i, ((tensors, _), weight) in enumerate(zip(results, weights, strict=True))
    ]
    verdicts = policy.decide_round(candidates, RoundView(global_tensors, evaluate))
    return [v.accept for v in verdicts]


def train(lab: Lab, run: Run, rounds: int, log: Callable[[str], None]) -> dict[str, object]:
    """``rounds`` rounds of ``run``; its summary (accuracy per round, who was accepted)."""
    from decentralml.ml.models import evaluate
    from decentralml.ml.training import ReusableTrainer
    from decentralml.simulation.attacks import Attack
    from decentralml.strategies import Contribution, NothingToAggregate

    shards = lab.shards("iid")
    strategy = strategy_for(run.strategy)
    trainer = ReusableTrainer("mnist_mlp", 1e-3)
    attack = Attack(run.attack) if run.attack else None  # type: ignore[arg-type]
    attackers = range(CONTRIBUTORS - ATTACKERS, CONTRIBUTORS) if attack else range(0)

    def holdout(tensors: Mapping[str, np.ndarray]) -> dict:
        from decentralml.ml.models import set_model_tensors

        set_model_tensors(lab.scorer, dict(tensors))
        return evaluate(lab.scorer, *lab.holdout)

    global_tensors = initial_tensors()
    accuracy: list[float] = []
    accepted_attackers = accepted_honest = 0
    start = time.perf_counter()
    for r in range(1, rounds + 1):
        results = []
        for i, (x, y) in enumerate(shards):
            tensors = trainer.fit(global_tensors, x, y, seed=1000 * r + i)
            if attack is not None and i in attackers:
                tensors = attack.weights(global_tensors, tensors, seed=i)
            results.append((tensors, len(y)))
        kept = (
            screen_round(r, global_tensors, results, holdout)
            if run.screened
            else [True] * len(results)
        )
        accepted_attackers += sum(kept[i] for i in attackers)
        accepted_honest += sum(k for i, k in enumerate(kept) if i not in attackers)
        chosen = [Contribution(t, n) for (t, n), k in zip(results, kept, strict=True) if k]
        with contextlib.suppress(NothingToAggregate):  # nothing accepted: keep the weights
            global_tensors = strategy.aggregate(r, global_tensors, chosen)
        accuracy.append(lab.accuracy(global_tensors))
        log(f"{run.name} round {r}: {accuracy[-1]:.4f} ({time.perf_counter() - start:.0f} s)")
    return {
        "name": run.name,
        "strategy": run.strategy,
        "case": run.case,
        "rounds": rounds,
        "final": round(accuracy[-1], 4),
        "accuracy": [round(a, 4) for a in accuracy],
        "accepted_attackers": accepted_attackers,
        "accepted_honest": accepted_honest,
        "seconds": round(time.perf_counter() - start, 1),
    }


def table(summaries: Sequence[Mapping[str, object]]) -> str:
    """Final accuracy per strategy (rows) and case (columns), with the difference from the
    same strategy's clean run; screened cells also say how many attacker results got in."""
    found = {(s["strategy"], s["case"]): s for s in summaries}
    rows = [
        "| strategy | " + " | ".join(CASES) + " |",
        "| --- |" + " --- |" * len(CASES),
    ]
    for strategy in STRATEGIES:
        clean = found.get((strategy, "clean"))
        cells = []
        for case in CASES:
            s = found.get((strategy, case))
            if s is None:
                cells.append("not run")
                continue
            cell = f"{s['final']:.4f}"
            if clean is not None and case != "clean":
                cell += f" ({float(s['final']) - float(clean['final']):+.4f})"
            if case.endswith("screened"):
                cell += f", {s['accepted_attackers']}/{ATTACKERS * int(s['rounds'])} attacker"
            cells.append(cell)
        rows.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(summaries: Sequence[Mapping[str, object]], path: Path) -> str:
    """Grouped bars: final accuracy per strategy, one bar per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = {(s["strategy"], s["case"]): float(s["final"]) for s in summaries}  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(CASES)
    for k, case in enumerate(CASES):
        values = [found.get((s, case), np.nan) for s in STRATEGIES]
        ax.bar(np.arange(len(STRATEGIES)) + k * width, values, width, label=case)
    ax.set_xticks(np.arange(len(STRATEGIES)) + width * (len(CASES) - 1) / 2, list(STRATEGIES))
    ax.set(
        ylabel=f"test accuracy after {max(int(s['rounds']) for s in summaries)} rounds",
        ylim=(0.0, 1.0),
        title=f"MNIST IID, {CONTRIBUTORS} contributors, the last {ATTACKERS} attacking (×10)",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def replot(outputs: Sequence[Path]) -> list[dict[str, object]]:
    """The run summaries in the saved output of earlier runs (the last of a name wins)."""
    found: dict[str, dict[str, object]] = {}
    for line in (line for output in outputs for line in output.read_text().splitlines()):
        if line.startswith("{") and '"case"' in line:
            figures = json.loads(line)  # one run's summary, or a finished sweep's last line
            for summary in figures.get("runs", [figures]):
                found[str(summary["name"])] = summary
    return list(found.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help="comma-separated run names or parts of names, in that order"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--quick", action="store_true", help="1 round of fedavg, sign_flip")
    parser.add_argument("--list", action="store_true", help="print the run names")
    parser.add_argument("--image", type=Path, default=ROOT / "docs/images/attacked-learning.png")
    parser.add_argument("--replot", type=Path, nargs="+", metavar="OUTPUT")
    args = parser.parse_args(argv)
    runs = select([w for w in args.only.split(",") if w])
    if args.quick:
        runs, args.rounds = [Run("fedavg", "sign_flip", True)], 1
    if args.list:
        print("\n".join(r.name for r in all_runs()))
        return 0
    if not runs or args.rounds < 1:
        print("error: no run matches --only (see --list), or --rounds < 1", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.replot:
        summaries = replot(args.replot)
    else:
        lab = Lab()
        summaries = []
        for run in runs:
            summaries.append(train(lab, run, args.rounds, log))
            log(json.dumps(summaries[-1]))
    print(table(summaries))
    image = plot(summaries, args.image)
    figures = {"bench": "attacked_learning", "cpus": os.cpu_count(), "image": image}
    print(json.dumps({**figures, "contributors": CONTRIBUTORS, "runs": summaries}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
