"""The maintenance step's one-line report names what the cache's backfill did."""

from __future__ import annotations

from services.prewarm.ports import MaintenanceResult


def test_the_report_names_the_backfill_when_there_was_one() -> None:
    result = MaintenanceResult(3, True, 40, 0.25, backfilled=7, backfill_pending=2)
    assert result.report() == (
        "removed 3 old semantic entries, backfilled 7 semantic entries (2 still waiting), "
        "vacuumed and analysed the vector table, 40 entries left (250 ms)"
    )
    assert "unknown still waiting" in MaintenanceResult(0, False, 0, 0.0, 0, -1).report()


def test_the_report_leaves_the_backfill_out_when_nothing_waited() -> None:
    report = MaintenanceResult(0, False, 5, 0.01).report()
    assert report == "removed 0 old semantic entries, no vacuum, 5 entries left (10 ms)"
