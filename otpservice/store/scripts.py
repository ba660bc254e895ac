"""The Lua scripts, loaded from ``lua/*.lua`` and registered once per client.

redis-py's registered scripts call EVALSHA and reload on NOSCRIPT, so a ``SCRIPT FLUSH`` or a
Redis restart is survived. The challenge scripts get the shared ``_prelude.lua`` in front of
them, so their status rules are written once.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from otpservice.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from redis.commands.core import AsyncScript

    from otpservice.store.client import StoreClient

# Error replies that mean "cannot serve now", not "bug": memory full, read-only replica,
# cluster resharding or down, a long script running.
_TRANSIENT_REPLIES = (
    "OOM",
    "READONLY",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "TRYAGAIN",
    "LOADING",
    "BUSY",
    "NOREPLICAS",
)


def _source(name: str) -> str:
    return resources.files("otpservice.store").joinpath("lua", name).read_text(encoding="utf-8")


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn Redis being down, slow or refusing writes into ``StoreUnavailable``."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnavailable("the store cannot be reached; retry shortly") from exc
    except ResponseError as exc:
        message = str(exc)
        if message.startswith(_TRANSIENT_REPLIES) or "OOM" in message:
            raise StoreUnavailable("the store refused the write; retry shortly") from exc
        raise
    except RedisError as exc:
        # Cluster errors (ClusterDownError, SlotNotCoveredError, ...) and the like.
        raise StoreUnavailable("the store cannot serve now; retry shortly") from exc


class Scripts:
    """Every Lua script, registered on one client."""

    def __init__(self, client: StoreClient) -> None:
        prelude = _source("_prelude.lua")

        def register(name: str, *, shared: bool = True) -> AsyncScript:
            body = _source(f"{name}.lua")
            return client.register_script(f"{prelude}\n{body}" if shared else body)

        self.issue_challenge = register("issue_challenge")
        self.spend_attempt = register("spend_attempt")
        self.record_verdict = register("record_verdict")
        self.cancel_challenge = register("cancel_challenge")
        self.read_challenge = register("read_challenge")
        self.check_ready = register("check_ready", shared=False)


async def run_script(script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
    """Run ``script`` and return its reply as a list, Redis failures as ``StoreUnavailable``."""
    with store_errors():
        reply = await script(keys=list(keys), args=list(args))
    return list(reply) if isinstance(reply, list) else [reply]
