"""The web page's routes (service/api/ui.py): ``/`` redirects to ``/ui``; the page and its files
load without an API key (the API calls still need one) and name nothing outside the service.
The page itself is tested in a browser in tests/service/ui/test_page.py."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch

import pytest

from service.api.ui import STATIC_DIR
from tests.conftest import REPO_ROOT
from tests.service.helpers import make_settings, serve

pytestmark = pytest.mark.anyio
KEY = "a-write-key-of-tenant-a-0123456789:a:write"


async def test_the_page_and_its_files_load_without_a_key(tmp_path, checkpoint_a):
    secured = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=KEY)
    async with serve(secured) as running:
        http = running.http
        root = await http.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui"
        page = await http.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert sorted(assets) == ["/ui/assets/app.js", "/ui/assets/style.css"]
        for asset in assets:
            answer = await http.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
        assert (await http.get("/v1/collections")).status_code == 401  # the API still needs one
        assert (await http.get("/ui/assets/nothing.js")).status_code == 404


async def test_the_page_is_not_part_of_the_api_document(settings):
    async with serve(settings) as running:
        paths = (await running.http.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_the_page_is_three_files_that_load_nothing_from_elsewhere():
    files = sorted(path.name for path in STATIC_DIR.iterdir())
    assert files == ["app.js", "index.html", "style.css"]
    for name in files:
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://|@import|//cdn", text), name


def test_the_page_ships_with_the_package():
    """pyproject's package data names every file of the page, so an installed service (not only
    a checkout, or the Docker image, which copies service/ whole) serves it."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service"]
    for path in STATIC_DIR.iterdir():
        inside = path.relative_to(REPO_ROOT / "service").as_posix()
        assert any(fnmatch(inside, pattern) for pattern in patterns), inside
