"""Signed artifact links: ``?exp=<unix seconds>&sig=<hex HMAC>`` for a tag (``<img>``, ``<audio>``, ``<video>``)
that cannot send a token. The HMAC (SHA-256, keyed with the JWT secret) covers the job id, the artifact name and
the expiry, so a link opens that one file until then and nothing else."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

from engineroom.core.config import Settings
from engineroom.core.errors import Forbidden, NotFound

#: Keeps these signatures apart from any other HMAC made with the same secret.
PURPOSE = b"engineroom.artifact.v1"


def _signature(settings: Settings, job_id: str, name: str, expires_at: int) -> str:
    key = settings.jwt_secret.get_secret_value().encode()
    message = b"\n".join((PURPOSE, job_id.encode(), name.encode(), str(expires_at).encode()))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_path(settings: Settings, job_id: str, name: str, *, now_s: float | None = None) -> tuple[str, int]:
    """The link's path and query, and its expiry (unix seconds)."""
    expires_at = int((time.time() if now_s is None else now_s) + settings.artifact_link_ttl_s)
    sig = _signature(settings, job_id, name, expires_at)
    return f"/jobs/{job_id}/artifacts/{quote(name)}?exp={expires_at}&sig={sig}", expires_at


def check_signature(settings: Settings, job_id: str, name: str, exp: int, sig: str) -> None:
    """Accept a link for this file that has not expired.

    Raises:
      NotFound: signed for another file (or not signed here): the same answer as for a missing file.
      Forbidden: a link made here for this file, expired.
    """
    if not hmac.compare_digest(_signature(settings, job_id, name, exp).encode(), sig.encode()):
        raise NotFound(f"artifact {name} of job {job_id} not found")
    if exp < time.time():
        raise Forbidden("this artifact link expired; list the job's artifacts for a fresh one")
