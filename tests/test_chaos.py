"""A short seeded chaos run (``tests/chaos.py``): kill -9 and SIGSTOP of workers, kill -9
of the server (resumed from its job dir), the feed's disk filling up and emptying, 503s,
slow pages and bad items, all at once; the feed must hold every page exactly once."""

from __future__ import annotations

import pytest

from tests import chaos

pytestmark = pytest.mark.timeout(400)


def test_a_seeded_chaos_run_leaves_an_exact_feed(capsys: pytest.CaptureFixture[str]) -> None:
    code = chaos.run(seed=11, seconds=25, pages=800, workers=3)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "feed: 800 items, 800 distinct pages, 0 missing, 0 written twice, 0 bad items" in out
