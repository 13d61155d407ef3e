"""``GET /``: the dashboard page. Its scripts and styles are static files under ``/static/dashboard/``; it signs in
with ``/?token=<JWT>`` or a form and then speaks the same REST and WebSocket API as any client."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(tags=["dashboard"])

#: The one HTML page; views are ES modules next to it, routed by the URL's fragment (``#/jobs/<id>``).
INDEX_HTML = Path(__file__).resolve().parent.parent / "static" / "dashboard" / "index.html"

#: The page runs only its own files. ``no-referrer``: a ``/?token=`` address never leaks in a Referer header
#: before the page has removed the token from the address bar.
HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    """The live dashboard (queues, jobs, workflows, notifications)."""
    return FileResponse(INDEX_HTML, media_type="text/html", headers=HEADERS)
