"""Use cases the edges share: the gateway, the scheduler and the workers call these, never one another.

Submitting jobs, job control (cancel, retry, delete), workflows, creating schedules, the outbox (``dispatch.py``),
announcing events (``publisher.py``: recorded in MongoDB, then published), the task registry and ``JobContext``
(what the gateway validates is what the workers run) and the tokens that say who is asking. A service combines
``store/`` and ``messaging/``; it knows no HTTP, no Dramatiq actor and no scheduler loop.
"""
