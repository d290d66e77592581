"""Suite-wide checks.

A test module or directory skipped as a whole (`pytest.importorskip` at import, a `skip` in a conftest) hides a
whole suite, usually because an optional dependency is missing. Such skips are listed at the end of the run, and
with `OMNIPRESS_STRICT_SKIPS=1` (set by `.ci/run`) they fail the run, so a missing dependency cannot hide tests in
CI. Skips of single tests (no GPU, for instance) are not affected.
"""

from __future__ import annotations

import os

import pytest

_SKIPPED_COLLECTIONS: list[tuple[str, str]] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED_COLLECTIONS.append((report.nodeid or "<root>", str(reason)))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _SKIPPED_COLLECTIONS:
        return
    strict = os.environ.get("OMNIPRESS_STRICT_SKIPS") == "1"
    terminalreporter.section("whole test modules skipped" + (" (failing: OMNIPRESS_STRICT_SKIPS=1)" if strict else ""))
    for nodeid, reason in _SKIPPED_COLLECTIONS:
        terminalreporter.write_line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED_COLLECTIONS and os.environ.get("OMNIPRESS_STRICT_SKIPS") == "1" and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
