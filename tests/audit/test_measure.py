"""The measurement entry points `make bench` calls: they run the real code paths and count what they did
(timings are reported, never asserted)."""

from __future__ import annotations

from pathlib import Path

from baton.audit.keys import generate_signing_key
from baton.audit.sqlite_store import SqliteAuditStore
from baton_demo.perf.audit import auditor_append_rate, bare_insert_rate, bare_scan_rate, synthetic_records, verify_rate


async def test_the_auditor_and_verify_measurements_run_the_real_paths_against_their_baselines(tmp_path: Path) -> None:
    key = generate_signing_key()
    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.setup()
    appended = await auditor_append_rate(store, 90, batch_size=40, signing_key=key)
    assert appended.items == 90 and await store.count() == 90 and appended.seconds > 0
    bare = await bare_insert_rate(store, 90, batch_size=40)
    assert bare.items == 90 and await store.count() == 90  # the scratch table is gone, the audit untouched
    verified, report = await verify_rate(store, key.public_key())
    assert report.ok and verified.items == 90 and report.workflows == 30
    assert (await bare_scan_rate(store)).items == 90
    await store.close()


async def test_synthetic_traffic_starts_new_workflows_as_old_ones_end() -> None:
    records = await synthetic_records(600, partitions=2)
    workflows = {r.key for r in records}
    assert len(workflows) == 200  # three events each
    first, last = records[:300], records[300:]
    assert not {r.key for r in first} & {r.key for r in last}
