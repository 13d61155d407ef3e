"""Engine actors and the task API users write against."""

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
