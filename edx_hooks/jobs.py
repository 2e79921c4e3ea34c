"""The enrollment jobs as APScheduler stores them.

A stored job names its function by module and name, and holds only plain
arguments (the item ids): ``edx_hooks.jobs:enroll_items`` and
``edx_hooks.jobs:check_accounts`` are named by every job store since 0.1.0,
so they stay here, under these names. Each is a thin entry: the scheduler's
executor (``scheduler.JobExecutor``) hands it the service's enrollment
runtime (``runtime=``: a stored job holds only the item ids), and the work
is in ``enrollment``.
"""

from __future__ import annotations

from .enrollment import steps
from .enrollment.runtime import Runtime
from .scheduler import needs_runtime


@needs_runtime
async def enroll_items(item_ids: list[int], runtime: Runtime | None = None) -> None:
    """Make one attempt at each of these line items; schedule the next
    attempt where one is needed (``steps.attempt``)."""
    await _given(runtime).run(item_ids, steps.attempt)


@needs_runtime
async def check_accounts(item_ids: list[int], runtime: Runtime | None = None) -> None:
    """Look for the accounts of these items' learners (awaiting-account), and
    set the paid mode of those who have an active one now (``steps.check``).
    A turn at the LMS is taken only for that call: a check that finds no
    account costs none."""
    await _given(runtime).run(item_ids, steps.check)


def _given(runtime: Runtime | None) -> Runtime:
    if runtime is None:
        raise RuntimeError("an enrollment job runs in the service's runtime: "
                           "the scheduler's JobExecutor gives it")
    return runtime
