"""A bounded sample of every fuzz target (`make fuzz` runs 10^6 inputs per target)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.mutator import fuzz
from tests.fuzz.targets import TARGETS, Target, mutated

IDS = [target.name for target in TARGETS]


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_parser_raises_only_its_documented_errors(target: Target) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target.inputs | mutated(target.inputs))
    def run(data: bytes) -> None:
        target.check(data)

    run()


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_mutation_fuzzer_sample(target: Target) -> None:
    report = fuzz(target, 5000, seed=1, seeds=40)
    assert report.inputs == 5000
    assert report.unhandled == 0, report.failures[0][1]
