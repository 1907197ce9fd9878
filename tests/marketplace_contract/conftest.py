"""Fixtures of the marketplace contract suite: every test in this folder runs once per backend
in backends.BACKENDS (the chain's runs are marked ``integration``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.marketplace_contract.backends import BACKEND_MARKS, BACKENDS, START, Backend, People


@pytest.fixture(params=[pytest.param(name, marks=BACKEND_MARKS.get(name, [])) for name in BACKENDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh, empty marketplace of one backend, with its clock, accounts and capabilities."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def people(backend: Backend) -> People:
    """Fresh accounts: a creator holding START units, contributors holding only what their
    own writes cost."""
    return People(
        alice=backend.account(START * backend.unit, fee_allowance=False),
        bob=backend.account(),
        charlie=backend.account(),
        dave=backend.account(),
        eve=backend.account(),
    )
