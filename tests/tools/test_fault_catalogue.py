"""Every entry of the fault catalogue (``tools/reliability.py``, which writes ``docs/reliability.md``) as a test: a
fault ends in a message matching the entry's ``expect`` (an exception, a ``lightning-kd`` exit, or a run that went on
and said what it did), a guard or probe observes the right outcome, and no user file is changed. A fault without a
recorded ``gap`` must also keep naming both the problem and the fix; a ``known_bad`` entry (silent today, or a guard
that does not hold) is an expected failure until the library is fixed — then its test says to update the catalogue."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.faults import Fault  # noqa: E402
from tools.reliability import CATALOGUE, cell, run_fault  # noqa: E402


def _param(fault: Fault) -> object:
    marks = [pytest.mark.slow] if fault.slow else []
    if fault.known_bad:
        marks.append(pytest.mark.xfail(strict=True, reason=f"known gap: {fault.gap}"))
    return pytest.param(fault, id=fault.id, marks=marks)


@pytest.mark.parametrize("fault", [_param(f) for f in CATALOGUE])
def test_fault(fault: Fault) -> None:
    record = run_fault(fault)
    if record.outcome == "skipped":
        pytest.skip(record.message)
    assert record.outcome != "broken", f"the fault could not be set up: {record.message}"
    if fault.kind == "fault":
        assert record.outcome in ("error", "exit", "said"), "the fault ended with no error and nothing said"
    else:
        assert record.outcome == "ok", f"the {fault.kind} does not hold: {record.message}"
    assert re.search(fault.expect, record.message, re.S), f"{record.message!r} does not match {fault.expect!r}"
    assert not record.lost, f"user files changed or removed: {record.lost}"
    if fault.kind == "fault" and fault.gap is None:
        assert record.names_problem, f"the message names none of {record.tokens}: {record.message!r}"
        assert record.names_fix, f"the message names no fix: {record.message!r}"


def test_the_catalogue_is_complete_and_the_report_lists_it() -> None:
    ids = [f.id for f in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert sum(f.kind != "probe" for f in CATALOGUE) >= 55
    assert 3 <= sum(f.kind == "probe" for f in CATALOGUE) <= 5
    assert all(f.gap for f in CATALOGUE if f.known_bad), "a known_bad entry says what is missing (gap=)"
    report = (REPO / "docs" / "reliability.md").read_text()
    missing = [f.id for f in CATALOGUE if f"| {cell(f.title, 120)} |" not in report]
    assert not missing, f"docs/reliability.md is older than the catalogue; run `python tools/reliability.py`: {missing}"
