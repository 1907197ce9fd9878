"""What import contracts cannot say about the layers: flows and the CLI ask a marketplace what
it can do (capability Protocols), never which backend it is.

Which package may import which is enforced by import-linter's contracts in pyproject.toml
(`make lint`): the CLI > flows > tasks > core stack, the core without Prefect, the layers
inside the core (docs/architecture.md), the roles without backends and the wire format
without training code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from decentralml.marketplace import AuditsChain, ChargesFees, DevFaucet, Marketplace
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.marketplace.substrate import SubstrateMarketplace

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "decentralml"
CLI = ROOT / "decentralml_cli"
BACKEND_NAMES = {"embedded", "substrate"}


def sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _branches_on_a_backend(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
            yield f"{path.relative_to(ROOT)}:{node.lineno} probes with hasattr"
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {o.value for o in operands if isinstance(o, ast.Constant)}
            if names & BACKEND_NAMES:
                yield f"{path.relative_to(ROOT)}:{node.lineno} compares with a backend name"


@pytest.mark.parametrize("folder", ["flows", "tasks"])
def test_flows_and_tasks_never_branch_on_a_backend(folder: str) -> None:
    found = [line for path in sources(ROOT / folder) for line in _branches_on_a_backend(path)]
    assert found == []


def test_the_cli_never_branches_on_a_backend() -> None:
    assert sources(CLI), "the CLI package moved: point CLI at it"
    assert [line for path in sources(CLI) for line in _branches_on_a_backend(path)] == []


def test_capabilities_are_declared_by_the_backends(tmp_path: Path) -> None:
    """The embedded ledger mints dev tokens and charges no fees; the chain backend mints on
    a dev chain, charges fees and can be audited (checked on the class: no chain needed)."""
    embedded = EmbeddedMarketplace(tmp_path / "m.sqlite")
    assert isinstance(embedded, Marketplace) and isinstance(embedded, DevFaucet)
    assert not isinstance(embedded, ChargesFees) and not isinstance(embedded, AuditsChain)
    chain = object.__new__(SubstrateMarketplace)  # no connection: capabilities only
    for capability in (Marketplace, DevFaucet, ChargesFees, AuditsChain):
        assert isinstance(chain, capability), capability.__name__


def test_the_curated_api_loads_lazily_and_completely() -> None:
    """``import decentralml`` stays light (a contributor's CLI and the seed functions import
    it), and every curated name resolves to its module's object."""
    code = (
        "import sys, decentralml\n"
        "assert 'tensorflow' not in sys.modules and 'prefect' not in sys.modules\n"
        "from decentralml.contributor import contribute_once\n"
        "assert decentralml.contribute_once is contribute_once\n"
        "print(len([getattr(decentralml, n) for n in decentralml.__all__]))\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) == len(__import__("decentralml").__all__) > 10
