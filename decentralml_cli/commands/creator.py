"""The creator's commands: ``demo`` (a whole training on this machine), ``train`` (every round,
contributors elsewhere), and the single steps ``publish``, ``round`` and ``review``.

Flows are imported inside each command, after its config is loaded and checked, so a bad
config is refused before TensorFlow or Prefect starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from decentralml.protocol.errors import ConfigError
from decentralml.runtime.config import RunConfig
from decentralml_cli.config import _config


def _reviewer(config: RunConfig):
    """Who answers ManualAccept without a decisions file: the terminal prompt if there is one,
    else the Prefect UI form when a Prefect server is configured (the round pauses for it);
    with neither, the command is refused now rather than blocking in ``input()``."""
    from decentralml.protocol.records import ValidationStrategy
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
    """Rows from ``decentralml.creator.report.round_row``, headed by the primary metric's name."""
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
    from decentralml.creator.session import open_session
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
    from decentralml.creator.report import round_row

    print_round_table([round_row(r) for r in reports])
    return 1 if any(r.shortfall for r in reports) else 0


def cmd_publish(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.creator.session import open_session
    from decentralml.io.weights import decode
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
    from decentralml.creator.report import round_row
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
    from decentralml.creator.session import open_session

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
