"""The example browser page (off unless `browser_page` is set): served on ``/browser`` from the
package, so a pip-installed callbridge has it too. The page calls an RTVBP application from the
browser's microphone through a WebRTC endpoint and an `rtvbp` endpoint in one session; see
examples/browser/README.md.

The page is static and holds no secret, so it is served without a token even when control
authentication is on; the control WebSocket it opens is guarded as any other (the user types
the token into the page).
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["BROWSER_PAGE_PATH", "setup_browser_page"]

BROWSER_PAGE_PATH: Final = "/browser"
PAGE_FILE: Final = "browser_page.html"
SECURITY_HEADERS: Final = {
    # Nothing is fetched from elsewhere: the inline script and same-origin WebSockets only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
        " connect-src 'self'; media-src 'self' blob: mediastream:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def setup_browser_page(app: web.Application) -> None:
    """Serve the page on `BROWSER_PAGE_PATH` of `app`."""
    page = resources.files("callbridge.server").joinpath(PAGE_FILE).read_text(encoding="utf-8")

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers=SECURITY_HEADERS)

    app.router.add_get(BROWSER_PAGE_PATH, serve_page)
