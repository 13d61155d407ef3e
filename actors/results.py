"""What a task may return: a JSON value small enough for the job document. Files are artifacts."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python

from engineroom.core.errors import PermanentError

#: What every refusal ends with: where the output should go instead.
_USE_ARTIFACTS = "save files and large outputs with ctx.save_artifact(name, data) and return a small JSON result"


class ResultTooLarge(PermanentError):
    """A task returned raw bytes or a JSON result over ``ENGINEROOM_MAX_RESULT_BYTES``; no retry will shrink it."""


def storable_result(value: Any, *, max_bytes: int) -> Any:
    """``value`` as the JSON stored in the job document.

    Raises:
      ResultTooLarge: ``value`` is raw bytes, or its JSON passes ``max_bytes``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        size = memoryview(value).nbytes
        raise ResultTooLarge(f"the task returned {size} raw bytes; a job's result is JSON: {_USE_ARTIFACTS}")
    result = to_jsonable_python(value)
    size = len(json.dumps(result, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ResultTooLarge(
            f"the task's result is {size} bytes of JSON, over the {max_bytes} a job document keeps "
            f"(ENGINEROOM_MAX_RESULT_BYTES): {_USE_ARTIFACTS}"
        )
    return result
