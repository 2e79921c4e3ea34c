"""Enrollment: the work each stored line item has at the LMS.

* ``runtime`` -- the :class:`~.runtime.Runtime` the service owns: lifecycle
  (start, halt, drain), admission (a cap on items in progress) and the
  bookkeeping of which task holds which item and whose call is under way.
* ``steps`` -- the per-item state machine: one attempt (enroll, unenroll,
  withdraw, an account check), and the LMS calls it makes.
* ``outcomes`` -- recording what an attempt came to: enrolled, a retry, a
  failure, an outcome unknown; and the item's next job.

The jobs APScheduler stores name ``edx_hooks.jobs:enroll_items`` and
``:check_accounts``; the scheduler's executor hands them the runtime (see
``scheduler.JobExecutor``).
"""
