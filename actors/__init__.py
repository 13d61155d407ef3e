"""Engine actors, and the task API users write against: defined in ``services/`` (the gateway validates against
the same registry), re-exported here as the public ``from engineroom.actors import task, JobContext``."""

from engineroom.core.errors import PermanentError, TransientError
from engineroom.services.context import JobContext
from engineroom.services.registry import task

__all__ = [
    # Declaring tasks
    "task",
    "JobContext",
    # Telling engineroom how a failure should be treated
    "TransientError",
    "PermanentError",
]
