"""The artifact store a deployment's settings name."""

from __future__ import annotations

from engineroom.artifacts.base import ArtifactStore
from engineroom.core.config import Settings
from engineroom.store.artifact_files import GridFSArtifactStore
from engineroom.store.client import Database


def build_artifact_store(settings: Settings, db: Database) -> ArtifactStore:
    """GridFS in ``db`` unless ``ENGINEROOM_ARTIFACTS_URL`` names an ``s3://`` bucket. Build it on the loop that
    uses it (motor binds there)."""
    if settings.artifacts_url:
        from engineroom.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore(settings.artifacts_url)
    return GridFSArtifactStore(db)
