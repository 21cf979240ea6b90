"""The web page: register examples (drawings, images or texts) and classify in a browser.

Three static files shipped in the package (service/ui/static: one HTML, one CSS, one script),
no build step and nothing loaded from elsewhere: ``GET /ui`` is the page, ``/ui/assets/...``
its style and script, and ``/`` redirects to it. The page uses only the public API (with the
key the user gives it, when auth is on); the files themselves need no key
(service/edge/admission.py).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from service.edge.admission import UI_ASSETS_PATH, UI_PATH

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui" / "static"
# Everything from the service itself: a page that tried to load anything from elsewhere (or to
# run an inline script) would be refused by the browser, so "works offline" cannot regress.
# blob: for the thumbnails and previews, which the script fetches with the key and shows.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated: a new release's page is seen at once
}


async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


async def to_page() -> RedirectResponse:
    return RedirectResponse(UI_PATH)


def install_ui(app: FastAPI) -> None:
    """Serve the page at ``/ui`` (``/`` redirects there) and its files at ``/ui/assets``;
    none of them is part of the API's OpenAPI document."""
    app.add_api_route(UI_PATH, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", to_page, methods=["GET"], include_in_schema=False)
    app.mount(UI_ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="ui-assets")
