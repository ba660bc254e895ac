"""The API docs page in a real headless Chromium, offline: it lists the operations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.app import INDEX_KEY, OUTBOX_KEY, PEPPER
from tests.support.browser import chromium
from tests.support.processes import ServiceProcess
from tests.support.servers.redis import RedisServer

ADMIN_TOKEN = "docs-admin-token-0123456789abcdef0123"

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless, that can reach nothing but loopback."""
    with chromium() as driver:
        yield driver


def requested_hosts(driver: webdriver.Chrome) -> set[str]:
    """Every host the page sent an HTTP request to, from Chromium's network log."""
    hosts = set()
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            # chrome:// and data: URLs are the browser's own: they leave no machine.
            if url.startswith(("http:", "https:", "ws:", "wss:")):
                hosts.add(urlsplit(url).hostname or url)
    return hosts


def operations_listed(driver: webdriver.Chrome, base: str) -> set[str]:
    driver.get(f"{base}/openapi/swagger")
    WebDriverWait(driver, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock-summary-path"))
    )
    paths = driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    return {p.get_attribute("data-path") or p.text for p in paths}


def test_the_docs_open_offline_and_list_the_operations(browser: webdriver.Chrome) -> None:
    service = ServiceProcess("--dev")
    try:
        listed = operations_listed(browser, service.url)
        assert {"/challenge", "/verify", "/challenge/{challenge_id}"} <= listed
        assert requested_hosts(browser) == {"127.0.0.1"}
    finally:
        service.stop()


def test_with_tokens_the_page_asks_for_an_admin_token(
    browser: webdriver.Chrome, redis_server: RedisServer, tmp_path: Path
) -> None:
    for name, value in {"pepper": PEPPER, "index": INDEX_KEY, "outbox": OUTBOX_KEY}.items():
        (tmp_path / name).write_text(value)
    config = tmp_path / "otp.toml"
    config.write_text(f"""
[redis]
url = "{redis_server.url}"
key_prefix = "docs-ui-test"
[secrets]
pepper_file = "{tmp_path / "pepper"}"
index_key_file = "{tmp_path / "index"}"
outbox_key_file = "{tmp_path / "outbox"}"
[unsafe]
allow_console_sender = true
[[api_tokens]]
client = "ops"
token_sha256 = "{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}"
scopes = ["admin"]
""")
    service = ServiceProcess("--config", str(config))
    try:
        # With a trailing slash too: the page's links are absolute.
        browser.get(f"{service.url}/openapi/swagger/")
        field = WebDriverWait(browser, 30).until(
            expected_conditions.visibility_of_element_located((By.ID, "token"))
        )
        assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path") == []
        field.send_keys(ADMIN_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        WebDriverWait(browser, 30).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, ".opblock-summary-path")
            )
        )
        assert not browser.find_element(By.ID, "token-form").is_displayed()
        # The token is in Swagger UI's Authorize dialog: "Try it out" sends it, or another.
        authorized = browser.execute_script(
            "return window.ui.authSelectors.authorized().toJS().bearer.value"
        )
        assert authorized == ADMIN_TOKEN
        assert requested_hosts(browser) == {"127.0.0.1"}
    finally:
        service.stop()
