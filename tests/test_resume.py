"""Start-up gives every pending line item its job back, once."""

from __future__ import annotations

import pytest

from .conftest import line_item, shopify_order, until


@pytest.mark.gen_test
async def test_pending_items_are_resumed_after_restart(harness, lms):
    service = await harness.start()
    service.scheduler.pause()  # accepted and committed, but no job gets to run
    response = await harness.shopify(shopify_order(line_item(email="a@example.org"),
                                                   line_item(email="b@example.org")))
    assert response.code == 200
    await harness.stop()
    # their job was due at once and kept in memory: it is gone with the process
    assert harness.jobs() == []
    assert [i["state"] for i in harness.items()] == ["pending", "pending"]
    assert lms.calls == []

    await harness.start()
    await until(lambda: all(i["state"] == "enrolled" for i in harness.items()))
    assert sorted(x.email for x in lms.learners()) == ["a@example.org", "b@example.org"]
    assert harness.jobs() == []


@pytest.mark.gen_test
async def test_a_stored_retry_is_kept_across_a_restart_and_not_duplicated(harness, lms):
    from .standin_lms import Forced
    await harness.start(retry={"delay_seconds": 1.5})
    lms.forced.append(Forced(status=503))
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: harness.items()[0]["attempts"] == 1)
    await harness.stop()
    assert harness.jobs() == ["retry-1"]

    service = await harness.start(retry={"delay_seconds": 1.5})
    from edx_hooks import scheduler
    assert await scheduler.resume(service.store, service.scheduler) == 0  # covered
    await until(lambda: harness.items()[0]["state"] == "enrolled")
    await harness.quiet()
    assert len(lms.learners()) == 2 and harness.items()[0]["attempts"] == 2
    assert harness.jobs() == []


@pytest.mark.gen_test
@pytest.mark.allow_tracebacks
async def test_sweep_restores_a_lost_job_without_a_restart(harness, lms, monkeypatch):
    from edx_hooks import scheduler
    service = await harness.start(retry={"sweep_seconds": 0.3})
    lost = []
    real_schedule = scheduler.schedule_new

    def failing_schedule(sched, item_ids):
        if not lost:  # the first scheduling fails, as with a full disk
            lost.extend(item_ids)
            raise OSError("disk full")
        real_schedule(sched, item_ids)

    monkeypatch.setattr(scheduler, "schedule_new", failing_schedule)
    response = await harness.shopify(shopify_order(line_item()))
    assert response.code == 200  # the order is committed
    assert lost == [1] and service.scheduler.get_job("enroll-1") is None
    await until(lambda: harness.items()[0]["state"] == "enrolled")
    assert len(lms.learners()) == 1
