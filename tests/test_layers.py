"""The layers, enforced on the source (ast, nothing imported): a lower layer never imports a
higher one, and flows and the CLI ask a marketplace what it can do (capability Protocols),
never which backend it is.

    decentralml_cli/                          the command line: starts flows
        |
    flows/  tasks/                            the story (Prefect)
        |
    decentralml/ (core: no Prefect)           creator, contributor, validation, strategies
        |
    decentralml/marketplace/                  Protocol + capabilities, rules, ledger, backends
        |
    decentralml/chain/                        client, codec, audit: knows no marketplace
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


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (at any depth: lazy imports count too), absolute."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield node.lineno, base
            for alias in node.names:  # from decentralml import marketplace
                yield node.lineno, f"{base}.{alias.name}"


def offenders(paths: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in paths
        for line, module in imported_modules(path, root)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """Control: the scanner must find the imports it is meant to forbid."""
    module = tmp_path / "decentralml" / "chain" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..marketplace import rules\n    import prefect.flows\n")
    found = offenders([module], ("decentralml.marketplace", "prefect"), root=tmp_path)
    assert len(found) == 3, found  # the package, the name imported from it, and prefect


def test_chain_never_imports_the_marketplace() -> None:
    assert offenders(sources(CORE / "chain"), ("decentralml.marketplace",)) == []


def test_the_core_never_imports_prefect_flows_or_tasks() -> None:
    above = ("prefect", "prefect_dask", "flows", "tasks", "decentralml_cli")
    assert offenders(sources(CORE), above) == []


def test_flows_and_tasks_never_import_the_cli() -> None:
    below = sources(ROOT / "flows") + sources(ROOT / "tasks")
    assert offenders(below, ("decentralml_cli",)) == []


def test_marketplace_backends_never_import_the_layers_above() -> None:
    above = ("decentralml.creator", "decentralml.contributor", "decentralml.session")
    assert offenders(sources(CORE / "marketplace"), above) == []


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
