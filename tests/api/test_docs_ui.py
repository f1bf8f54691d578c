"""The docs pages load only the API's own pinned assets, cached for a year and kept out of the schema."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.api.app import create_app
from app.api.docs_ui import ASSETS_PATH, SCALAR, STATIC_DIR, SWAGGER_UI
from app.settings import Settings

PAGES = ("/docs", "/docs/scalar")
# Every attribute or CSS reference a browser would fetch on its own.
_FETCHED = re.compile(r"""(?:src|href|data-url)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)""", re.IGNORECASE)


@pytest.fixture
async def docs_client() -> AsyncIterator[httpx.AsyncClient]:
    # The docs need no database: the app without a container serves them.
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def _fetched_urls(page: str) -> list[str]:
    # Swagger UI inlines the spec in a <script>; its example URLs are data, not loads.
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.DOTALL | re.IGNORECASE)
    scripts = re.findall(r"<script\b[^>]*>", page, flags=re.IGNORECASE)
    return [a or b for a, b in _FETCHED.findall(markup + "".join(scripts))]


@pytest.mark.parametrize("path", PAGES)
async def test_docs_pages_reference_only_local_assets(docs_client: httpx.AsyncClient, path: str) -> None:
    r = await docs_client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = _fetched_urls(r.text)
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert url.startswith(("/", "data:")) and not url.startswith("//"), f"{path} loads {url} from elsewhere"
    assert "cdn." not in r.text and "fonts.googleapis" not in r.text


async def test_every_referenced_asset_is_served_as_committed_with_an_immutable_cache(
    docs_client: httpx.AsyncClient,
) -> None:
    referenced = set()
    for path in PAGES:
        page = (await docs_client.get(path)).text
        referenced |= {u for u in _fetched_urls(page) if u.startswith(ASSETS_PATH + "/")}
    assert {f"{ASSETS_PATH}/{SWAGGER_UI}/swagger-ui-bundle.js", f"{ASSETS_PATH}/{SCALAR}/standalone.js"} <= referenced
    for url in sorted(referenced):
        r = await docs_client.get(url)
        assert r.status_code == 200, url
        assert r.content == (STATIC_DIR / url.removeprefix(ASSETS_PATH + "/")).read_bytes(), url
        cache = {d.strip() for d in r.headers["cache-control"].split(",")}
        assert {"public", "immutable", "max-age=31536000"} <= cache, (url, cache)
    for license_file in (f"{SWAGGER_UI}/LICENSE", f"{SCALAR}/LICENSE"):
        assert (STATIC_DIR / license_file).stat().st_size > 500  # the licenses travel with the files


async def test_assets_stay_out_of_the_schema_and_unknown_ones_are_problems(docs_client: httpx.AsyncClient) -> None:
    paths = (await docs_client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")]
    missing = await docs_client.get(f"{ASSETS_PATH}/{SWAGGER_UI}/nope.js")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    escape = await docs_client.get(f"{ASSETS_PATH}/{SWAGGER_UI}/..%2F..%2Fdocs_ui.py")
    assert escape.status_code == 404 and "STATIC_DIR" not in escape.text


@pytest.mark.parametrize("path", ["/docs/x", "/docs/nested/page", "/docs/openapi.yaml"])
async def test_an_unknown_docs_path_is_a_problem_not_an_html_page(docs_client: httpx.AsyncClient, path: str) -> None:
    # Litestar answers these with its own HTML 404 page; every 4xx here is problem+json with a code.
    r = await docs_client.get(path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
    assert r.json()["code"] == "NOT_FOUND"
