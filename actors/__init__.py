"""Engine actors and the task API users write against."""

from engineroom.actors.context import JobContext
from engineroom.actors.registry import task
from engineroom.core.errors import PermanentError, TransientError

__all__ = [
    # Declaring tasks
    "task",
    "JobContext",
    # Telling engineroom how a failure should be treated
    "TransientError",
    "PermanentError",
]
