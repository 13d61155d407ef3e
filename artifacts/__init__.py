"""Artifacts: files tasks save (images, audio, video), streamed in chunks into GridFS or an S3-compatible store."""
