"""``otpservice serve``: uvicorn in front of the app, one process or several (``--workers N``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from otpservice.validation import load_settings

if TYPE_CHECKING:
    import argparse

DEV_BANNER = """\
================================================================================
  otpservice DEVELOPMENT MODE: embedded in-memory store (nothing persists),
  console SMS (codes are printed below), generated pepper, loopback only.
  NEVER use this in production: run without --dev and with a config file.
================================================================================"""


def serve(args: argparse.Namespace) -> int:
    """Check the settings, then serve the API (and, in process, the workers) until stopped."""
    import uvicorn

    from otpservice.app import create_app
    from otpservice.logs import configure_logging

    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.workers is not None:
        overrides["workers"] = args.workers
    settings = load_settings(args.config, dev=args.dev, overrides=overrides)
    configure_logging(settings.log_level, settings.effective_log_format)
    if settings.dev_mode:
        print(DEV_BANNER, flush=True)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # uvicorn's loggers propagate to the root handler set up above (numbers masked).
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # The login app calls over loopback; nothing here reads the client address, so
        # X-Forwarded-* headers are neither trusted nor parsed.
        "proxy_headers": False,
        "timeout_graceful_shutdown": 20,
    }
    if settings.workers == 1:
        config = uvicorn.Config(create_app(settings), **options)
    else:
        hand_off_to_workers(args.config, settings.workers)
        config = uvicorn.Config(
            "otpservice.app:create_app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )
    sockets = [config.bind_socket()]
    pod = settings.pod_listener
    if pod is not None:
        sockets.append(uvicorn.Config(config.app, host=pod.host, port=pod.port).bind_socket())
    server = uvicorn.Server(config)
    if settings.workers == 1:
        server.run(sockets=sockets)
    else:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=sockets).run()
    return 0


def hand_off_to_workers(config_path: str | None, workers: int) -> None:
    """Let ``serve --workers N``'s child processes rebuild the app from the same file and
    environment the parent checked (``app.create_app_from_environment`` reads them)."""
    if config_path:
        # Absolute, not resolved: a ConfigMap's ..data symlink moves to each new version, and
        # the workers must keep following it.
        os.environ["OTP_CONFIG"] = os.path.abspath(config_path)
    os.environ["OTP_WORKERS"] = str(workers)
