"""Flow bodies narrate; the work is in tasks, so the Prefect UI shows every step.

A static check over flows/*.py: inside a ``@flow`` function, no call goes to the marketplace
or the storage directly, and none to the core's known data, model and evaluation entry
points; those go through a task module (``steps.*``, ``reporting.*``). It reads the source
only (no Prefect, no TensorFlow). It cannot see I/O hidden inside a helper a flow calls: the
round test in test_round_reports.py checks the task runs themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FLOWS = sorted((Path(__file__).parents[1] / "flows").glob("*.py"))
TASK_MODULES = {"steps", "reporting"}  # how flows/ imports tasks/
RECEIVERS = {"market", "store"}  # the marketplace and the artifact store: I/O on every call
CORE_WORK = {
    "open_session",  # loads the data splits, builds and compiles the model
    "set_global",  # adopts weights and evaluates them on the test split
    "evaluate_tensors",
    "evaluate",
    "resume",  # reads a resumed training's weights from storage
    "fit",
    "predict",
    "open_marketplace",
    "open_store",
}


def _dotted(node: ast.expr) -> list[str]:
    """``a.b.c`` as ["a", "b", "c"] (empty for anything but names and attributes)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return [*head, node.attr] if head else []
    return []


def _is_flow(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if _dotted(target)[-1:] == ["flow"]:
            return True
    return False


def direct_work(source: str) -> list[str]:
    """``function: call`` for every call a flow body makes to I/O or CPU work itself."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not (isinstance(function, ast.FunctionDef) and _is_flow(function)):
            continue
        for call in ast.walk(function):
            if not isinstance(call, ast.Call):
                continue
            path = _dotted(call.func)
            if not path or path[0] in TASK_MODULES:
                continue
            if RECEIVERS & set(path[:-1]) or path[-1] in CORE_WORK:
                found.append(f"{function.name}: {'.'.join(path)}()")
    return found


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_flow_bodies_leave_io_and_cpu_work_to_tasks(path: Path):
    assert direct_work(path.read_text()) == []


def test_the_check_sees_work_done_in_a_flow_body():
    """Its own control: the calls flows/creator.py made before evaluation became a task."""
    source = """
from prefect import flow
@flow(name="round")
def run_round(session, creator, task_id):
    task = creator.market.get_task(task_id)
    metrics = session.set_global(session.global_tensors)
    steps.review(creator.market, task)
    return metrics
def helper(session):
    return session.set_global({})  # not a flow: not checked
"""
    assert direct_work(source) == [
        "run_round: creator.market.get_task()",
        "run_round: session.set_global()",
    ]
