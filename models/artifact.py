"""Artifacts: the files a task saves (images, audio, video), recorded on their job and kept in the artifact store."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

#: What an artifact name may hold: a file name, no path (it is part of a URL and of a storage key).
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
_NAME = re.compile(ARTIFACT_NAME_PATTERN)


def check_artifact_name(name: str) -> str:
    """``name`` if it is a plain file name (letters, digits, ``._-``, at most 200, not starting with a dot).

    Raises:
      ValueError: it is not.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"artifact name {name!r} must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


ArtifactName = Annotated[str, AfterValidator(check_artifact_name)]


class ArtifactRecord(BaseModel):
    """One saved file, as recorded in the job document's ``artifacts`` list."""

    name: ArtifactName
    size_bytes: int = Field(ge=0)
    content_type: str
    #: Hex SHA-256 of the content: the ``ETag`` of downloads, and the check a client can make.
    sha256: str
    created_at: datetime
    #: The attempt that saved it: a retried job keeps what earlier attempts saved under other names; saving a name
    #: again (in any attempt) replaces that file.
    attempt: int = Field(ge=0)


class ArtifactPublic(ArtifactRecord):
    """An artifact as ``GET /jobs/{id}/artifacts`` lists it, with a short-lived signed download link."""

    #: Relative link that works without a token until ``url_expires_at`` (for ``<img>``, ``<audio>``, ``<video>``).
    url: str
    url_expires_at: datetime


class ArtifactList(BaseModel):
    items: list[ArtifactPublic]
