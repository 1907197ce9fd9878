"""The `decentralml` command: demo, creator, contributor and inspection commands.

It sits above the flows (it starts them), so it lives outside the core package ``decentralml``,
which imports no Prefect, flows or tasks (tests/test_layers.py); ``python -m decentralml_cli``
runs it like the installed ``decentralml`` script.

Flows are imported lazily inside commands, after the config is loaded and checked: listing
tasks or balances must not pay for TensorFlow and Prefect start-up, and a bad config is
refused before either starts. A config problem (or any refusal this package raises on
purpose) is one line ``error: ...`` and exit status 2; Ctrl-C is one line and status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from decentralml import checks
from decentralml.config import (
    MARKETPLACE_ENV,
    AttackKind,
    LocalOptimizer,
    RunConfig,
    StrategyName,
    load_config,
    load_contributor_config,
)
from decentralml.errors import ConfigError, DecentralMLError

DEFAULT_CONFIG = Path("configs/mnist.yaml")
ATTACKS = get_args(AttackKind)
STRATEGY_NAMES = get_args(StrategyName)
OPTIMIZERS = get_args(LocalOptimizer)
SUBSTRATE_CONFIG = Path("configs/mnist-substrate.yaml")
DEFAULT_CONFIG_FOR = {"substrate": SUBSTRATE_CONFIG}
"""The config a ``--marketplace`` choice starts from when no ``--config`` is given."""


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
        ("training.optimizer", "optimizer"),
        ("training.learning_rate", "learning_rate"),
        ("attack.kind", "attack"),
        ("attack.attackers", "attackers"),
        ("strategy", "strategy"),
        ("workload", "workload"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            found[dotted] = value
    found.update(_workload_overrides(getattr(args, "workload", None)))
    if getattr(args, "contributors", None) is not None and getattr(args, "command", "") == "demo":
        found.setdefault("task.max_assignments", args.contributors)
    return found


def _workload_overrides(name: str | None) -> dict[str, object]:
    """``--workload NAME``: that workload, its data (``data.source`` follows it) and the
    settings a built-in workload needs to fit the shipped configs (decentralml/workloads/)."""
    if name is None:
        return {}
    from decentralml import workloads

    return {"data.source": None, **workloads.get(name).config}


def cmd_workloads(args: argparse.Namespace) -> int:
    """The built-in workloads, then those installed distributions publish (entry points):
    what ``workload:`` (or ``--workload``) accepts. A published one that cannot be loaded is
    listed as broken, with why, and the others are still listed."""
    from decentralml import workloads

    print(f"{'name':<14} {'data':<14} {'metric':<9} {'input':<9} model")
    for name in [*workloads.names(), *workloads.published()]:
        try:
            workload = workloads.get(name)
        except ConfigError as error:
            print(f"{name:<14} broken: {error}")
            continue
        spec = workload.dataset.spec
        shape = "x".join(str(d) for d in spec.input_shape)
        print(
            f"{name:<14} {workload.dataset.name:<14} {workload.primary_metric:<9} "
            f"{shape + ' ' + spec.dtype:<9} {workload.model}"
        )
    return 0


def _local_data(args: argparse.Namespace) -> str | None:
    """``--data PATH`` read once now, so a missing or malformed file is one line before the
    agent starts (each task then checks it against its own data spec)."""
    if args.data is None:
        return None
    from decentralml.workloads.local_data import read_local_data

    read_local_data(args.data)
    return str(args.data)


def _config(args: argparse.Namespace) -> RunConfig:
    """The command's config with its overrides, checked for the parts the command uses
    (``checks``, set per command in build_parser) before anything is opened or published."""
    path = args.config
    if path == DEFAULT_CONFIG:  # a chain wants chain-sized rewards and accounts, not just a flag
        path = DEFAULT_CONFIG_FOR.get(getattr(args, "marketplace", None), path)
    config = load_config(path, _overrides(args))
    return checks.check_config(config, args.checks, source=str(path))


def _reviewer(config: RunConfig):
    """Who answers ManualAccept without a decisions file: the terminal prompt if there is one,
    else the Prefect UI form when a Prefect server is configured (the round pauses for it);
    with neither, the command is refused now rather than blocking in ``input()``."""
    from decentralml.domain import ValidationStrategy
    from decentralml.validation.manual import NO_REVIEWER, prompt_decider

    task = config.task
    if task.validation_strategy is not ValidationStrategy.ManualAccept or task.manual_decisions:
        return None
    if sys.stdin.isatty():
        return prompt_decider()
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        print("ManualAccept: answer the paused round's form in the Prefect UI", file=sys.stderr)
        return None
    raise ConfigError(NO_REVIEWER)


def cmd_demo(args: argparse.Namespace) -> int:
    config = _config(args)
    decider = _reviewer(config)
    from flows.demo import run_demo

    print(
        f"demo: {config.contributors} contributors, {config.rounds} rounds, "
        f"{config.data.partition} data, {config.marketplace.backend} marketplace"
    )
    with round_progress(config.rounds) as on_round:
        summary = run_demo(config, on_round=on_round, decider=decider)
    print_round_table(summary["rounds"])
    print(
        f"final test {summary['metric_name']} {summary['final_metric']:.4f} "
        f"in {summary['wall_seconds']} s"
    )
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
    """A progress bar over rounds showing the latest value of the primary metric."""
    from tqdm import tqdm

    with tqdm(total=rounds, desc="rounds", unit="round", file=sys.stderr) as bar:

        def advance(report) -> None:
            bar.set_postfix({"task": report.task_id, report.metric_name: f"{report.metric:.4f}"})
            bar.update(1)

        yield advance


def print_round_table(rounds: list[dict]) -> None:
    """Rows from ``decentralml.reporting.round_row``, headed by the primary metric's name."""
    name = rounds[0]["metric_name"] if rounds else "metric"
    print(f"{'round':>5} {'task':>5} {name:>9} {'accepted':>9} {'rejected':>9} deferred")
    for row in rounds:
        deferred = row.get("deferred") or {}
        print(
            f"{row['round']:>5} {row['task_id']:>5} {row['metric']:>9.4f} "
            f"{len(row['accepted']):>9} {len(row['rejected']):>9} {len(deferred):>8}"
            + ("  (task stays open)" if deferred else "")
            + (f"  (failed: {row['shortfall']})" if row.get("shortfall") else "")
        )


def cmd_train(args: argparse.Namespace) -> int:
    config = _config(args)
    decider = _reviewer(config)
    from decentralml.session import open_session
    from flows.creator import run_training

    session = open_session(config, run=args.run or config.name)
    with round_progress(config.rounds) as on_round:
        reports = run_training(config, session, decider=decider, on_round=on_round)
    if not reports:
        print(
            f"run {session.creator.run!r} has already finished its {config.rounds} rounds; "
            "raise --rounds to continue it, or give --run NAME to start another training"
        )
        return 0
    from decentralml.reporting import round_row

    print_round_table([round_row(r) for r in reports])
    return 1 if any(r.shortfall for r in reports) else 0


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
    decider = _reviewer(config)
    from decentralml.reporting import round_row
    from flows.creator import creator_tags, outcome, run_round

    session, task = _session_at_task(config, args)
    with creator_tags(session.creator.run):
        state = run_round(session, task.spec.round_number, task.task_id, decider, return_state=True)
    report = outcome(state)
    print_round_table([round_row(report)])
    return 1 if report.shortfall else 0


def _session_at_task(config: RunConfig, args: argparse.Namespace):
    """The creator's session holding the global weights task ``args.task_id`` was published
    with (verified against its record): what its round starts from."""
    from decentralml.creator import published_global
    from decentralml.session import open_session

    session = open_session(config, run=args.run or config.name)
    task = session.creator.market.get_task(args.task_id)
    session.set_global(published_global(session.creator, task))
    return session, task


def cmd_review(args: argparse.Namespace) -> int:
    """The non-interactive ManualAccept route, step one: what awaits a decision, with the
    held-out metrics the UI form shows, and optionally a decisions file to fill in."""
    config = _config(args)
    from decentralml.creator import pending_results, review_sheet
    from decentralml.validation.manual import decisions_template, review_text

    session, task = _session_at_task(config, args)
    creator = session.creator
    sheet = review_sheet(
        creator,
        task,
        pending_results(creator.market, task.task_id),
        session.global_tensors,
        session.evaluate_tensors,
        session.max_examples,
    )
    print(f"task {task.task_id}: {len(sheet.pending)} submission(s) await a decision")
    if sheet.pending:
        print(review_text(sheet.pending))
    for verdict in sheet.refused:
        print(f"{verdict.submission_id:>4} refused by screening: {verdict.reason}")
    for deferred in sheet.deferred:
        print(f"{deferred.submission_id:>4} deferred: {deferred.reason}")
    if args.write and sheet.pending:
        args.write.write_text(decisions_template(task.task_id, sheet.pending))
        print(
            f"wrote {args.write}: fill in accept and reason, then run "
            f"decentralml round {task.task_id} --validation ManualAccept --decisions {args.write}"
        )
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    config = _contributor_config(args)
    from decentralml.runtime import open_marketplace

    market = open_marketplace(config.marketplace)
    block = market.current_block()
    print(
        f"{'id':>4} {'status':<11} {'reward/result':>13} {'free/slots':>10} {'blocks left':>11} "
        f"{'model':<12} {'epochs':>6} creator"
    )
    for task in market.list_tasks(open_only=not args.all):
        spec = task.spec
        left = spec.expiration_block - block
        print(
            f"{task.task_id:>4} {task.status.value:<11} {spec.reward_per_result:>13} "
            f"{f'{task.open_slots}/{spec.max_assignments}':>10} "
            f"{left if left > 0 else 'expired':>11} {spec.model or '-':<12} "
            f"{spec.epochs or '-':>6} {_short(task.creator)}"
        )
    return 0


def _short(address: str) -> str:
    """An address shortened as wallets show it: enough to recognise, not to copy."""
    return f"{address[:6]}...{address[-4:]}" if len(address) > 12 else address


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


def _contributor_config(args: argparse.Namespace) -> RunConfig:
    """A contributor's config: ``--config`` if given or present, else the defaults (a machine
    without the creator's file), pointed at ``--marketplace`` or $DECENTRALML_MARKETPLACE_URL."""
    path = args.config if args.config != DEFAULT_CONFIG or args.config.exists() else None
    location = getattr(args, "marketplace_at", None)
    config = load_contributor_config(path, location, _overrides(args))
    return checks.check_config(config, args.checks, source=str(path or "no config file"))


def cmd_contribute(args: argparse.Namespace) -> int:
    _contributor_config(args)  # refused here, before the agent flow starts (it loads its own)
    data_path = _local_data(args)
    from decentralml.shutdown import STOP

    with STOP.on_signals():  # from here on a signal stops the agent cleanly (see the module)
        from flows.contributor import agent

        path = args.config if args.config.exists() else ""
        state = agent(
            str(path), args.index, args.max_tasks, args.marketplace_at, data_path, return_state=True
        )
    if state.is_cancelled():
        print(f"stopped: {state.message}", file=sys.stderr)
        return STOP.exit_status
    print(f"contributed to {state.result()} task(s)")
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
    demo.add_argument("--partition", choices=["iid", "shards", "shards-disjoint", "dirichlet"])
    demo.add_argument("--marketplace", choices=["embedded", "substrate"])
    demo.add_argument("--validation", choices=["AutoAccept", "ManualAccept", "CustomAccept"])
    demo.add_argument("--epochs", type=int)
    demo.add_argument("--optimizer", choices=OPTIMIZERS, help="the contributors' local optimizer")
    demo.add_argument("--learning-rate", type=float, help="the contributors' learning rate")
    demo.add_argument("--decisions", help="ManualAccept: JSON/YAML file of verdicts by id")
    demo.add_argument("--strategy", choices=STRATEGY_NAMES, help="aggregation rule")
    demo.add_argument("--attack", choices=ATTACKS, help="simulate attackers of this kind")
    demo.add_argument("--attackers", type=int, help="how many contributors attack (the last K)")
    demo.add_argument("--summary-json", type=Path)
    demo.add_argument("--workload", help="model and data (decentralml workloads; or mod:attr)")
    train_cmd = add(
        "train",
        cmd_train,
        "creator: publish and run every round (contributors elsewhere)",
        checks.CREATE,
    )
    train_cmd.add_argument("--rounds", type=int)
    train_cmd.add_argument("--workload", help="model and data (decentralml workloads; or mod:attr)")
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
    review_cmd = add(
        "review",
        cmd_review,
        "creator: list a task's submissions awaiting a ManualAccept decision",
        checks.CREATE,
    )
    review_cmd.add_argument("task_id", type=int)
    review_cmd.add_argument("--write", type=Path, help="write a decisions file to fill in")
    review_cmd.add_argument("--run", help="run name for storage paths (default: config name)")
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
    contribute_cmd.add_argument(
        "--data",
        type=Path,
        help="train on this file or folder (.npz x/y, .csv with a label column, or "
        "a folder of images in one subfolder per label: PATH/<label>/*.png)",
    )
    add("workloads", cmd_workloads, "list the built-in and installed workloads", ())
    contribute_cmd.add_argument(
        "--max-tasks", "--rounds", dest="max_tasks", type=int, help="stop after this many tasks"
    )
    for command in (contribute_cmd, tasks_cmd):
        command.add_argument(
            "--marketplace",
            dest="marketplace_at",
            metavar="URL_OR_PATH",
            help="a chain's ws:// URL or an embedded marketplace's file "
            f"(default: ${MARKETPLACE_ENV}, else the config's)",
        )
    return parser


PREFECT_DEFAULTS = {
    # Prefect's 20 s is too short for ephemeral mode's temporary server on a busy machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Its SQLite answers 503 on a write lock ("database is locked") and its 15-connection pool
    # a 500 after 30 s of waiting; with 100 agents both happen. The client retries 503 with a
    # 2**n s back-off: 8 tries ride out ~8 min of a slow orchestrator instead of Prefect's ~1.
    "PREFECT_CLIENT_MAX_RETRIES": "8",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "120",
}


def main(argv: list[str] | None = None) -> int:
    for name, value in PREFECT_DEFAULTS.items():  # before Prefect is imported; the user's win
        os.environ.setdefault(name, value)
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DecentralMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
