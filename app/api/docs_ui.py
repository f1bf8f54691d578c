"""The interactive docs (Swagger UI at /docs, Scalar at /docs/scalar) served from pinned, vendored assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Router, get
from litestar._openapi.plugin import handle_schema_path_not_found
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.static_files import create_static_files_router

# Litestar's defaults load both UIs (Scalar unpinned), its favicon and a theme from a CDN: offline the docs
# were a blank page. The files live in app/api/static (see its README); their folder names carry the version.
SWAGGER_UI = "swagger-ui-5.35.0"
SCALAR = "scalar-api-reference-1.76.0"
ASSETS_PATH = "/docs/assets"
STATIC_DIR = Path(__file__).parent / "static"

_FAVICON = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/{SWAGGER_UI}/favicon-32x32.png'>"
# Scalar's bundle injects its own styles; Litestar's default theme sheet is on a CDN, so link an empty one.
_NO_EXTRA_CSS = "data:text/css,"
# Without these Scalar fetches its fonts, posts telemetry and offers its hosted AI agent, MCP and developer tools,
# all of which call Scalar's own hosts.
_SCALAR_OPTIONS = {"withDefaultFonts": False, "telemetry": False, "agent": {"disabled": True},
                   "mcp": {"disabled": True}, "showDeveloperTools": "never", "defaultOpenAllTags": True}


def render_plugins() -> list[OpenAPIRenderPlugin]:
    swagger = f"{ASSETS_PATH}/{SWAGGER_UI}"
    return [
        SwaggerRenderPlugin(path="/", favicon=_FAVICON, js_url=f"{swagger}/swagger-ui-bundle.js",
                            css_url=f"{swagger}/swagger-ui.css",
                            standalone_preset_js_url=f"{swagger}/swagger-ui-standalone-preset.js"),
        ScalarRenderPlugin(path="/scalar", favicon=_FAVICON, js_url=f"{ASSETS_PATH}/{SCALAR}/standalone.js",
                           css_url=_NO_EXTRA_CSS, options=_SCALAR_OPTIONS),
    ]


def assets_router() -> Router:
    """Serves the vendored files; a version bump changes the URL, so a year-long immutable cache is safe."""
    return create_static_files_router(
        path=ASSETS_PATH, directories=[STATIC_DIR], name="docs-assets", include_in_schema=False,
        cache_control=CacheControlHeader(public=True, max_age=365 * 24 * 3600, immutable=True))


@get(["/{path:str}"], sync_to_thread=False, include_in_schema=False)
def _unknown_docs_page(path: FromPath[str]) -> None:
    raise NotFoundException(f"no docs page at /docs/{path.lstrip('/')}")


class DocsRouter(Router):
    """The /docs router, with Litestar's HTML 404 page for unknown docs paths swapped for our problem+json 404:
    every 4xx of this API is a problem with a code, including /docs/<anything>."""

    def register(self, value: Any) -> Any:
        if getattr(value, "fn", None) is handle_schema_path_not_found:
            value = _unknown_docs_page
        return super().register(value)


def docs_router() -> Router:
    return DocsRouter("/docs", route_handlers=[], include_in_schema=False, dto=None, return_dto=None)
