"""Headless Chromium against our server, every packet on loopback: the browser scenarios run in
a fresh network namespace that has only `lo` (tests/server/loopback_namespace.py), one pytest
run for all of them, and each test here reports its scenario's outcome."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tests.server import browser_scenarios
from tests.server.loopback_namespace import Outcome, run_in_namespace, unshare_command

SCENARIOS = Path(browser_scenarios.__file__)
NAMES = [name for name, _ in inspect.getmembers(browser_scenarios) if name.startswith("test_")]
WHOLE_RUN_TIMEOUT_S = 100.0
"""A guard against a hang only; the scenarios together take a few seconds each."""

UNSHARE = unshare_command()
pytestmark = pytest.mark.skipif(isinstance(UNSHARE, str), reason=str(UNSHARE))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    assert not isinstance(UNSHARE, str)
    report = tmp_path_factory.mktemp("browser") / "scenarios.xml"
    return run_in_namespace(UNSHARE, SCENARIOS, report, WHOLE_RUN_TIMEOUT_S)


@pytest.mark.parametrize("name", NAMES)
def test_browser_scenario(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes.get(name) or outcomes.get("") or Outcome(False, f"{name} did not run")
    assert outcome.passed, outcome.details
