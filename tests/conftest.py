"""Session fixtures: the smoke-profile book, executed once and built once per test session."""

import pytest

from oodlib import runner


@pytest.fixture(scope="session")
def smoke_book():
    """Execute every stale chapter with the smoke profile (two jobs); outcomes by chapter name."""
    outcomes = runner.execute_book("smoke", jobs=2, log=lambda message: print(message, flush=True))
    return {o.notebook: o for o in outcomes}


@pytest.fixture(scope="session")
def smoke_html(smoke_book):
    """The smoke book built from the executed chapters with warnings as errors; the HTML folder."""
    failed = [o.notebook for o in smoke_book.values() if o.status == "failed"]
    assert not failed, f"chapters failed: {failed}"
    stage = runner.stage_book("smoke", list(smoke_book.values()))
    return runner.build_html("smoke", stage, strict=True)
