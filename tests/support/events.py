"""The login app's side of events: the settings that send them, and what it received."""

from __future__ import annotations

from tests.support.helpers import wait_until
from tests.support.servers.providers import EVENTS_SECRET, FakeApp
from tests.support.webhooks import SECRET


def with_events(app_endpoint: FakeApp) -> dict[str, object]:
    return {
        "events": {"callback_url": f"{app_endpoint.url}/otp-events"},
        "secrets": {"events_secret": EVENTS_SECRET, "acs_webhook_secret": SECRET},
    }


async def received(server: FakeApp, count: int = 1) -> list[str]:
    """The event types the app received, once it has ``count`` (5 s at most)."""
    await wait_until(lambda: len(server.delivered) >= count)
    return [m.body for m in server.delivered]
