"""Pydantic models at the edges: HTTP bodies, WebSocket frames, documents entering or leaving store/."""
