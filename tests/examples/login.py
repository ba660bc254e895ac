"""The example login app (examples/login-app), loaded as the tests' module ``login_app``, and
what its tests share: accounts, and a browser-like HTTP session that reads its forms."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import httpx
from argon2 import PasswordHasher

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "login-app"
USERS = {"alice": ("correct horse battery", "+14155550161"), "bob": ("staple", "+14155550162")}


def load_login_app() -> ModuleType:
    """``examples/login-app/login_app.py`` as a module (its folder is no package)."""
    found = sys.modules.get("login_app")
    if found is not None:
        return found
    spec = importlib.util.spec_from_file_location("login_app", FOLDER / "login_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["login_app"] = module
    spec.loader.exec_module(module)
    return module


def write_users(folder: Path) -> Path:
    """The accounts file the app reads: names, argon2id password hashes, phones."""
    hasher = PasswordHasher()
    path = folder / "users.json"
    path.write_text(
        json.dumps(
            [
                {"name": name, "password_hash": hasher.hash(password), "phone": phone}
                for name, (password, phone) in USERS.items()
            ]
        )
    )
    return path


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


async def post_form(
    browser: httpx.AsyncClient, page: httpx.Response, action: str, **fields: str
) -> httpx.Response:
    """Submit the form at ``action`` of ``page`` as a browser would (with its CSRF token)."""
    return await browser.post(action, data={"csrf": csrf_of(page), **fields})


async def log_in_with_password(browser: httpx.AsyncClient, name: str) -> httpx.Response:
    """The login form filled in for ``name``: the second-factor page."""
    page = await browser.get("/login")
    return await post_form(browser, page, "/login", username=name, password=USERS[name][0])
