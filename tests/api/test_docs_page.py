"""/docs and /redoc load nothing from outside the app: their files are served by the app."""

from __future__ import annotations

import re

import httpx
import pytest

from app.api.docs_page import ASSETS_URL, script_hashes
from app.api.web_page import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True)

CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def _references(html: str) -> list[str]:
    """Every URL the page loads by itself: src= and href= (link, script, img)."""
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
async def test_the_docs_load_only_files_the_app_serves(
    client: httpx.AsyncClient, path: str, expected: set[str]
) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    references = _references(page.text)
    assert {ref.removeprefix(f"{ASSETS_URL}/") for ref in references} == expected, references
    assert "http://" not in page.text
    assert "https://" not in page.text  # no CDN, no Google Fonts
    assert "//" not in "".join(references)  # not even protocol-relative
    for reference in references:
        asset = await client.get(reference)
        assert asset.status_code == 200, reference
        suffix = reference[reference.rindex(".") :]
        assert asset.headers["content-type"].startswith(CONTENT_TYPES[suffix]), reference
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert len(asset.content) > 1000, reference
    assert (await client.get("/openapi.json")).status_code == 200


async def test_swagger_ui_is_the_bundle_that_reads_openapi_3_1(client: httpx.AsyncClient) -> None:
    bundle = await client.get(f"{ASSETS_URL}/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text[:2000]
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
    # Swagger UI 4 cannot render OpenAPI 3.1 ("no valid version field"); 5 knows it.
    assert "isOAS31" in bundle.text


async def test_each_docs_page_has_a_policy_of_its_own_allowing_only_this_origin(
    client: httpx.AsyncClient,
) -> None:
    docs = await client.get("/docs")
    policy = docs.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    # The one inline start-up script is allowed by its hash, nothing else inline.
    hashes = script_hashes(docs.text)
    assert len(hashes) == 1
    assert directives["script-src"] == " ".join(["'self'", *hashes])
    assert "unsafe" not in policy
    assert directives["frame-ancestors"] == "'none'"
    redoc = await client.get("/redoc")
    redoc_policy = redoc.headers["content-security-policy"]
    assert "script-src 'self';" in redoc_policy + ";"
    assert "default-src 'self'" in redoc_policy
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert script_hashes(redirect.text)[0] in redirect.headers["content-security-policy"]
    # The admin page keeps its own, stricter policy.
    admin = await client.get("/admin/")
    assert admin.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "sha256" not in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_a_changed_asset_is_revalidated(client: httpx.AsyncClient) -> None:
    asset = await client.get(f"{ASSETS_URL}/swagger-ui.css")
    assert asset.headers["cache-control"] == "no-cache"
    again = await client.get(
        f"{ASSETS_URL}/swagger-ui.css", headers={"If-None-Match": asset.headers["etag"]}
    )
    assert again.status_code == 304
