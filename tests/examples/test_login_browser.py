"""The example login app in a real headless Chromium, in front of otpservice on a real Redis,
sending its SMS through the generic provider to a fake gateway the test reads.

Screenshots of each page are written to ``build/login-screenshots/`` at the repo's root, for a
person to look at. The service runs with ``lockout.max_failures = 3`` (stated here, and in the
config below), so the lockout page comes after three wrong codes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.examples.login import FOLDER, USERS, write_users
from tests.support.browser import chromium
from tests.support.processes import TOKEN, ServiceProcess, write_config
from tests.support.servers.providers import GATEWAY_SECRET, FakeGateway
from tests.support.servers.redis import RedisServer, free_port

pytestmark = pytest.mark.xdist_group("browser")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "login-screenshots"
MAX_FAILURES = 3


@pytest.fixture
def login_url(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[str, FakeGateway]]:
    """otpservice (generic provider to a fake gateway) and the login app, as processes."""
    gateway = FakeGateway()
    extra = f"""
[lockout]
max_failures = {MAX_FAILURES}
[send_limits]
min_interval_seconds = 0
[[sms.providers]]
type = "generic"
url = "{gateway.url}/send"
secret = "{GATEWAY_SECRET}"
"""
    service = ServiceProcess("--config", str(write_config(tmp_path, redis_server, extra)))
    port = free_port()
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "login_app:create_app",
            "--app-dir",
            str(FOLDER),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={
            **os.environ,
            "OTP_URL": service.url,
            "OTP_TOKEN": TOKEN,
            "LOGIN_USERS": str(write_users(tmp_path)),
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ServiceProcess.wait_for(url, app)
        yield url, gateway
    finally:
        app.terminate()
        app.wait(timeout=20)
        if app.stderr is not None:
            app.stderr.close()
        service.stop()
        gateway.close()


class Pages:
    """The browser on the login app, saving a screenshot of each page it reaches."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base
        self.shots = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.shots += 1
        self.driver.save_screenshot(str(SCREENSHOTS / f"{self.shots:02d}-{name}.png"))

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            box = self.driver.find_element(By.ID, name)
            box.clear()
            box.send_keys(value)

    def submit(self, button: str, name: str) -> None:
        self.driver.find_element(By.XPATH, f"//button[text()='{button}']").click()
        WebDriverWait(self.driver, 10).until(
            expected_conditions.presence_of_element_located((By.TAG_NAME, "h1"))
        )
        self.shot(name)

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def log_in(self, name: str) -> None:
        self.open("/login")
        self.fill(username=name, password=USERS[name][0])
        self.submit("Log in", "password")

    def log_out(self) -> None:
        self.submit("Log out", "logged-out")


def sms_code(gateway: FakeGateway, number: str, seen: int) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        bodies = [r.body for r in gateway.received if r.to == number]
        if len(bodies) > seen:
            found = re.search(r"(\d{6}) is your", bodies[-1])
            assert found is not None, bodies[-1]
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no SMS reached the gateway for {number}")


def test_both_factors_and_a_lockout_in_a_real_browser(
    login_url: tuple[str, FakeGateway],
) -> None:
    base, gateway = login_url
    with chromium() as driver:
        pages = Pages(driver, base)
        # 1. A password, then the code the SMS brought.
        pages.log_in("alice")
        pages.submit("Text me a code", "sms-sent")
        pages.fill(code=sms_code(gateway, USERS["alice"][1], 0))
        pages.submit("Verify", "logged-in-by-sms")
        assert "You are logged in as alice" in pages.text()

        # 2. Enrol an authenticator: the secret from the page's otpauth:// link.
        driver.find_element(By.ID, "enrol").click()
        pages.shot("enrol")
        app = pyotp.parse_uri(driver.find_element(By.ID, "otpauth").get_attribute("href"))
        assert isinstance(app, pyotp.TOTP)
        assert driver.find_element(By.CSS_SELECTOR, "#qr svg")
        activated_with = app.now()
        pages.fill(code=activated_with)
        pages.submit("Activate", "recovery-codes")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#recovery-codes li")) == 10
        driver.find_element(By.ID, "done").click()
        pages.log_out()

        # 3. Log in with the app: the activating step is used; the next step works.
        pages.log_in("alice")
        pages.fill(code=activated_with)
        pages.submit("Verify", "same-step-refused")
        assert "That code didn't work" in pages.text()
        pages.fill(code=app.at(time.time() + app.interval))
        pages.submit("Verify", "logged-in-by-app")
        assert "You are logged in as alice" in pages.text()
        pages.log_out()

        # 4. Wrong codes until the page asks to wait (lockout.max_failures = 3).
        pages.log_in("alice")
        for attempt in range(1, MAX_FAILURES + 1):
            pages.fill(code="000000")
            pages.submit("Verify", f"wrong-code-{attempt}")
        waiting = pages.text()
        assert re.search(r"Please wait \d+ seconds", waiting), waiting
        # Locked: no SMS is offered as a way around the lock, the recovery code is.
        assert "Text me a code" not in waiting
        assert "Use a recovery code" in waiting
