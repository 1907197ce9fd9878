"""The `decentralml` command: demo, creator, contributor and inspection commands.

Flows are imported lazily inside commands, after the config is loaded and checked: listing
tasks or balances must not pay for TensorFlow and Prefect start-up, and a bad config is
refused before either starts. A config problem (or any refusal this package raises on
purpose) is one line ``error: ...`` and exit status 2; Ctrl-C is one line and status 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from decentralml import checks
from decentralml.config import AttackKind, RunConfig, StrategyName, load_config
from decentralml.errors import DecentralMLError

DEFAULT_CONFIG = Path("configs/mnist.yaml")
ATTACKS = get_args(AttackKind)
STRATEGY_NAMES = get_args(StrategyName)
SUBSTRATE_CONFIG = Path("configs/mnist-substrate.yaml")


def _overrides(args: argparse.Namespace) -> dict:
    found = {}
    for dotted, attr in (
        ("rounds", "rounds"),
        ("contributors", "contributors"),
        ("data.partition", "partition"),
        ("marketplace.backend", "marketplace"),
        ("storage.url", "storage"),
        ("task.validation_strategy", "validation"),
        ("task.manual_decisions", "decisions"),
        ("training.epochs", "epochs"),
        ("attack.kind", "attack"),
        ("attack.attackers", "attackers"),
        ("strategy", "strategy"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            found[dotted] = value
    if getattr(args, "contributors", None) is not None and getattr(args, "command", "") == "demo":
        found.setdefault("task.max_assignments", args.contributors)
    return found


def _config(args: argparse.Namespace) -> RunConfig:
    """The command's config with its overrides, checked for the parts the command uses
    (``checks``, set per command in build_parser) before anything is opened or published."""
    path = args.config
    if path == DEFAULT_CONFIG and getattr(args, "marketplace", None) == "substrate":
        path = SUBSTRATE_CONFIG  # chain-sized rewards and accounts, not just another backend
    config = load_config(path, _overrides(args))
    return checks.check_config(config, args.checks, source=str(path))


def cmd_demo(args: argparse.Namespace) -> int:
    config = _config(args)
    from flows.demo import run_demo

    print(
        f"demo: {config.contributors} contributors, {config.rounds} rounds, "
        f"{config.data.partition} data, {config.marketplace.backend} marketplace"
    )
    with round_progress(config.rounds) as on_round:
        summary = run_demo(config, on_round=on_round)
    print_round_table(summary["rounds"])
    print(f"final test accuracy {summary['final_accuracy']:.4f} in {summary['wall_seconds']} s")
    attack = summary["attack"]
    if attack["kind"]:
        print(
            f"attack: {attack['attackers']} x {attack['kind']}; paid to attackers "
            f"{attack['paid_to_attackers']}, honest results rejected {attack['honest_rejected']}"
        )
    for payment in summary["payments"]:
        line = f"  paid {payment['amount']:>14} to {payment['contributor']}"
        if "received_on_chain" in payment:
            line += (
                f" (Balances.Transfer events: {payment['received_on_chain']},"
                f" fees paid: {payment['fees_paid']})"
            )
        print(line)
    if "creator_extrinsics" in summary:
        rounds = len(summary["rounds"])
        print(f"creator extrinsics: {summary['creator_extrinsics']} for {rounds} rounds")
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return 0


@contextmanager
def round_progress(rounds: int):
    """A progress bar over rounds showing the latest test accuracy."""
    from tqdm import tqdm

    with tqdm(total=rounds, desc="rounds", unit="round", file=sys.stderr) as bar:

        def advance(report) -> None:
            bar.set_postfix(task=report.task_id, accuracy=f"{report.accuracy:.4f}")
            bar.update(1)

        yield advance


def print_round_table(rounds: list[dict]) -> None:
    print(f"{'round':>5} {'task':>5} {'accuracy':>9} {'accepted':>9} {'rejected':>9} deferred")
    for row in rounds:
        deferred = row.get("deferred") or {}
        print(
            f"{row['round']:>5} {row['task_id']:>5} {row['accuracy']:>9.4f} "
            f"{len(row['accepted']):>9} {len(row['rejected']):>9} {len(deferred):>8}"
            + ("  (task stays open)" if deferred else "")
            + (f"  (failed: {row['shortfall']})" if row.get("shortfall") else "")
        )


def cmd_train(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.session import open_session
    from flows.creator import run_training

    session = open_session(config, run=args.run or config.name)
    with round_progress(config.rounds) as on_round:
        reports = run_training(config, session, on_round=on_round)
    if not reports:
        print(
            f"run {session.creator.run!r} has already finished its {config.rounds} rounds; "
            "raise --rounds to continue it, or give --run NAME to start another training"
        )
        return 0
    print_round_table([_round_row(r) for r in reports])
    return 1 if any(r.shortfall for r in reports) else 0


def _round_row(report) -> dict:
    return {
        "round": report.round_number,
        "task_id": report.task_id,
        "accuracy": report.accuracy,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "deferred": report.deferred,
        "shortfall": report.shortfall,
    }


def cmd_publish(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.session import open_session
    from decentralml.weights import decode
    from flows.creator import publish

    session = open_session(config, run=args.run or config.name)
    if args.weights:
        session.set_global(decode(session.creator.store.get(args.weights)))
    task_id = publish(session, args.round)
    print(f"round {args.round} published as task {task_id}")
    return 0


def cmd_round(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.session import open_session
    from decentralml.weights import decode
    from flows.creator import creator_tags, outcome, run_round

    session = open_session(config, run=args.run or config.name)
    task = session.creator.market.get_task(args.task_id)
    store = session.creator.store
    global_bytes = store.get(task.spec.global_weights_path, task.spec.global_weights_sha256)
    session.set_global(decode(global_bytes))
    with creator_tags(session.creator.run):
        state = run_round(session, task.spec.round_number, task.task_id, return_state=True)
    report = outcome(state)
    print_round_table([_round_row(report)])
    return 1 if report.shortfall else 0


def cmd_tasks(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.runtime import open_marketplace

    market = open_marketplace(config.marketplace)
    print(
        f"{'id':>4} {'round':>5} {'status':<11} {'slots':>7} {'reward':>12} {'expires':>8} question"
    )
    for task in market.list_tasks(open_only=not args.all):
        print(
            f"{task.task_id:>4} {task.spec.round_number:>5} {task.status.value:<11} "
            f"{task.assigned:>3}/{task.spec.max_assignments:<3} {task.spec.pays_amount:>12} "
            f"{task.spec.expiration_block:>8}  {task.spec.question}"
        )
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.runtime import open_marketplace

    market = open_marketplace(config.marketplace)
    print(f"{'id':>4} {'status':<17} {'examples':>8} {'paid':>10} contributor reason")
    for sub in market.list_task_results(args.task_id):
        examples = sub.result.num_examples if sub.result else "-"
        print(
            f"{sub.submission_id:>4} {sub.status.value:<17} {examples:>8} {sub.paid:>10} "
            f"{sub.worker} {sub.reason}"
        )
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.accounts import keypair_from_uri
    from decentralml.runtime import open_marketplace

    market = open_marketplace(config.marketplace)
    address = (
        args.address
        if not args.address.startswith("//")
        else keypair_from_uri(args.address).ss58_address
    )
    print(f"{address} {market.balance(address)}")
    return 0


def cmd_contribute(args: argparse.Namespace) -> int:
    _config(args)  # refused here, before the agent flow starts (it loads the file itself)
    from flows.contributor import agent

    done = agent(str(args.config), args.index, args.rounds)
    print(f"contributed to {done} task(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decentralml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str, uses: tuple) -> argparse.ArgumentParser:
        """``uses``: the checks (decentralml.checks) for the config parts the command uses."""
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        command.set_defaults(handler=handler, checks=uses)
        return command

    demo = add("demo", cmd_demo, "run a whole federated training on this machine", checks.DEMO)
    demo.add_argument("--rounds", type=int)
    demo.add_argument("--contributors", type=int)
    demo.add_argument("--partition", choices=["iid", "shards", "dirichlet"])
    demo.add_argument("--marketplace", choices=["embedded", "substrate"])
    demo.add_argument("--validation", choices=["AutoAccept", "ManualAccept", "CustomAccept"])
    demo.add_argument("--epochs", type=int)
    demo.add_argument("--decisions", help="ManualAccept: JSON/YAML file of verdicts by id")
    demo.add_argument("--strategy", choices=STRATEGY_NAMES, help="aggregation rule")
    demo.add_argument("--attack", choices=ATTACKS, help="simulate attackers of this kind")
    demo.add_argument("--attackers", type=int, help="how many contributors attack (the last K)")
    demo.add_argument("--summary-json", type=Path)
    train_cmd = add(
        "train",
        cmd_train,
        "creator: publish and run every round (contributors elsewhere)",
        checks.CREATE,
    )
    train_cmd.add_argument("--rounds", type=int)
    train_cmd.add_argument(
        "--run", help="name of the training (default: config name); rerun it to resume"
    )
    publish_cmd = add("publish", cmd_publish, "creator: publish one round's task", checks.PUBLISH)
    publish_cmd.add_argument("--round", type=int, default=1)
    publish_cmd.add_argument("--run", help="run name for storage paths (default: config name)")
    publish_cmd.add_argument("--weights", help="URL of global weights to start from")
    round_cmd = add(
        "round",
        cmd_round,
        "creator: collect, validate, federate and settle a task",
        checks.CREATE,
    )
    round_cmd.add_argument("task_id", type=int)
    round_cmd.add_argument("--validation", choices=["AutoAccept", "ManualAccept", "CustomAccept"])
    round_cmd.add_argument("--decisions", help="ManualAccept: JSON/YAML file of verdicts by id")
    round_cmd.add_argument("--run", help="run name for storage paths (default: config name)")
    tasks_cmd = add("tasks", cmd_tasks, "list open tasks", checks.READ)
    tasks_cmd.add_argument("action", nargs="?", choices=["list"], default="list")
    tasks_cmd.add_argument("--all", action="store_true", help="include finished tasks")
    results = add("results", cmd_results, "list a task's submissions", checks.READ)
    results.add_argument("action", nargs="?", choices=["list"], default="list")
    results.add_argument("task_id", type=int)
    balance = add("balance", cmd_balance, "show an account's balance", checks.READ)
    balance.add_argument("address", help="SS58 address or dev URI such as //Bob")
    contribute_cmd = add(
        "contribute",
        cmd_contribute,
        "contributor: work on new tasks as they appear",
        checks.CONTRIBUTE,
    )
    contribute_cmd.add_argument("--index", type=int, default=0, help="data shard index")
    contribute_cmd.add_argument("--rounds", type=int, help="stop after this many tasks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DecentralMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
