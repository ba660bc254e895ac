"""Command line: ``otpservice serve``, ``worker``, ``config check FILE``, ``opt-outs export`` /
``import``, ``openapi``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otpservice.errors import ConfigError
from otpservice.validation import load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import IO

    from otpservice.config.schema import Settings, ValidSettings
    from otpservice.usecases.optout_files import FileFormat

log = logging.getLogger("otpservice")

DEV_BANNER = """\
================================================================================
  otpservice DEVELOPMENT MODE: embedded in-memory store (nothing persists),
  console SMS (codes are printed below), generated pepper, loopback only.
  NEVER use this in production: run without --dev and with a config file.
================================================================================"""


def openapi_document() -> str:
    """The OpenAPI spec of the app, as committed in ``openapi/openapi.json``."""
    from otpservice.app import create_app

    app = create_app(load_settings(dev=True, environ={}))
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"


def limits_table(settings: Settings) -> str:
    """The effective limits, one per line, for ``config check``."""
    rows: list[tuple[str, Any]] = [
        ("code.digits", settings.code.digits),
        ("code.ttl_seconds", settings.code.ttl_seconds),
        ("code.max_attempts", settings.code.max_attempts),
        ("code.tombstone_seconds", settings.code.tombstone_seconds),
        ("lockout.max_failures", settings.lockout.max_failures),
        ("lockout.base_seconds", settings.lockout.base_seconds),
        ("lockout.max_seconds", settings.lockout.max_seconds),
        ("lockout.memory_seconds", settings.lockout.memory_seconds),
        ("send_limits.min_interval_seconds", settings.send_limits.min_interval_seconds),
        ("send_limits.per_hour", settings.send_limits.per_hour),
        ("send_limits.per_day", settings.send_limits.per_day),
        ("hashing.memory_kib", settings.hashing.memory_kib),
        ("hashing.time_cost", settings.hashing.time_cost),
        ("hashing.parallelism", settings.hashing.parallelism),
        ("hashing.max_concurrent (effective)", settings.hashing.concurrency),
        ("hashing.max_waiting", settings.hashing.max_waiting),
        ("workers", settings.workers),
        (
            "api_tokens",
            ", ".join(t.client for t in settings.api_tokens) or "(none: trust loopback)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    table = "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
    return f"{table}\n\n{abuse_table(settings)}"


def abuse_table(settings: Settings) -> str:
    """The abuse rules, geo permissions, fraud guard and safe list, as a table."""
    abuse = settings.abuse
    rows = [("rule", "scope", "windows", "mode")]
    for rule in abuse.rules:
        scope: str = rule.scope
        if rule.scope == "ip_prefix":
            scope += f" (/{rule.ipv4_prefix}, /{rule.ipv6_prefix})"
        elif rule.scope == "prefix":
            scope += f" ({rule.prefix_digits} digits)"
        windows = ", ".join(f"{w.limit}/{_duration(w.seconds)}" for w in rule.windows)
        rows.append((rule.name, scope, windows, rule.mode))
    geo, guard = abuse.geo, abuse.fraud_guard
    rows.append(("geo", "countries", _allow_deny(geo.allow_countries, geo.deny_countries),
                 geo.mode))  # fmt: skip
    rows.append(("geo", "prefixes", _allow_deny(geo.allow_prefixes, geo.deny_prefixes), geo.mode))
    rows.append(("geo", "number types", "deny " + (", ".join(geo.deny_number_types) or "none"),
                 geo.mode))  # fmt: skip
    trip = f"verified/sent < {guard.floor} after {guard.min_sent} sent"
    rows.append((
        "fraud_guard", f"country, prefix ({guard.prefix_digits} digits)",
        f"{trip} in {_duration(guard.window_seconds)}", guard.mode if guard.enabled else "off",
    ))  # fmt: skip
    safe = abuse.safe_list
    rows.append(("safe_list", "exempt", f"{len(safe.numbers)} numbers, {len(safe.prefixes)} "
                 f"prefixes", "-"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _allow_deny(allow: list[str], deny: list[str]) -> str:
    return f"allow {', '.join(allow) or 'all'}; deny {', '.join(deny) or 'none'}"


def _serve(args: argparse.Namespace) -> int:
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
        # Worker processes rebuild the app from the same file and environment, validated above.
        if args.config:
            # Absolute, not resolved: a ConfigMap's ..data symlink moves to each new version,
            # and the workers must keep following it.
            os.environ["OTP_CONFIG"] = os.path.abspath(args.config)
        os.environ["OTP_WORKERS"] = str(settings.workers)
        config = uvicorn.Config(
            "otpservice.app:create_app_from_environment", factory=True,
            workers=settings.workers, **options,
        )  # fmt: skip
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


def _worker(args: argparse.Namespace) -> int:
    from otpservice.logs import configure_logging

    settings = load_settings(args.config)
    configure_logging(settings.log_level, settings.effective_log_format)
    asyncio.run(_deliver(settings))
    return 0


async def _deliver(settings: ValidSettings) -> None:
    """Run delivery workers until SIGTERM or SIGINT; sends in flight finish first."""
    from otpservice.runtime import Runtime
    from otpservice.store import connect

    client = connect(settings)
    runtime = Runtime(settings, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.start(deliver=True)
    log.info("delivery worker %s started", runtime.worker.consumer)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
        await client.aclose()
        log.info("delivery worker stopped")


def _opt_outs(args: argparse.Namespace) -> int:
    from otpservice.logs import configure_logging
    from otpservice.usecases.optout_files import format_of

    settings = load_settings(args.config)
    configure_logging("warning", "text")
    file_format = format_of(args.file, args.format)
    exporting = args.opt_outs_command == "export"
    if args.file == "-":
        stdio = sys.stdout if exporting else sys.stdin
        return asyncio.run(_transfer_opt_outs(settings, stdio, file_format, exporting, args.file))
    mode = "w" if exporting else "r"
    with Path(args.file).open(mode, encoding="utf-8", newline="") as stream:
        return asyncio.run(_transfer_opt_outs(settings, stream, file_format, exporting, args.file))


async def _transfer_opt_outs(
    settings: ValidSettings, stream: IO[str], file_format: FileFormat, exporting: bool, name: str
) -> int:
    """Export or import opt-outs through a runtime with no workers running."""
    from otpservice.runtime import Runtime
    from otpservice.store import connect
    from otpservice.usecases.optout_files import export_opt_outs, import_opt_outs

    client = connect(settings)
    runtime = Runtime(settings, client)
    try:
        await runtime.start(deliver=False)
        if exporting:
            count = await export_opt_outs(runtime.services.optouts, stream, file_format)
            print(f"exported {count} opt-outs", file=sys.stderr)
            return 0
        result = await import_opt_outs(runtime.services.optouts, stream, file_format)
        for error in result.errors:
            print(f"otpservice: {name}: {error}", file=sys.stderr)
        print(f"imported {result.added} opt-outs ({result.already} were opted out already, "
              f"{len(result.errors)} rows skipped)", file=sys.stderr)  # fmt: skip
        return 1 if result.errors else 0
    finally:
        await runtime.stop()
        await client.aclose()


def _config_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(f"{args.file}: valid\n")
    print(limits_table(settings))
    return 0


def _openapi(args: argparse.Namespace) -> int:
    document = openapi_document()
    if args.output == "-":
        sys.stdout.write(document)
    else:
        Path(args.output).write_text(document, encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otpservice`` command."""
    parser = argparse.ArgumentParser(prog="otpservice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--dev", action="store_true", help="development mode: no set-up needed")
    serve.add_argument("--config", help="TOML config file (default: $OTP_CONFIG)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="processes serving the API (default 1)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker", help="only deliver queued SMS (for a separate deployment of workers)"
    )
    worker.add_argument("--config", help="TOML config file (default: $OTP_CONFIG)")
    worker.set_defaults(run=_worker)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a file, print the limits")
    check.add_argument("file")
    check.set_defaults(run=_config_check)

    opt_outs = commands.add_parser("opt-outs", help="back up, restore or migrate opt-outs")
    opt_outs_commands = opt_outs.add_subparsers(dest="opt_outs_command", required=True)
    for name, what in (("export", "file to write"), ("import", "file to read")):
        transfer = opt_outs_commands.add_parser(name, help=f"{name} opt-outs (CSV or JSON lines)")
        transfer.add_argument(
            "file", help=f"{what}; - for standard {'output' if name == 'export' else 'input'}"
        )
        transfer.add_argument("--config", help="TOML config file (default: $OTP_CONFIG)")
        transfer.add_argument(
            "--format", choices=["csv", "jsonl"],
            help="default: csv for a .csv file name, else jsonl",
        )  # fmt: skip
        transfer.set_defaults(run=_opt_outs)

    openapi = commands.add_parser("openapi", help="write the OpenAPI spec")
    openapi.add_argument("--output", default="-", help="file to write (default: stdout)")
    openapi.set_defaults(run=_openapi)

    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"otpservice: configuration error: {exc}", file=sys.stderr)
        return 2
    return result
