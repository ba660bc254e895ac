"""The commands that run a runtime without HTTP: ``worker`` (delivery only) and
``opt-outs export|import``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from otpservice.validation import load_settings

if TYPE_CHECKING:
    import argparse
    from typing import IO

    from otpservice.config.schema import ValidSettings
    from otpservice.usecases.optout_files import FileFormat

log = logging.getLogger("otpservice")


def worker(args: argparse.Namespace) -> int:
    from otpservice.logs import configure_logging

    settings = load_settings(args.config)
    configure_logging(settings.log_level, settings.effective_log_format)
    asyncio.run(deliver(settings))
    return 0


async def deliver(settings: ValidSettings) -> None:
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


def opt_outs(args: argparse.Namespace) -> int:
    from otpservice.logs import configure_logging
    from otpservice.usecases.optout_files import format_of

    settings = load_settings(args.config)
    configure_logging("warning", "text")
    file_format = format_of(args.file, args.format)
    exporting = args.opt_outs_command == "export"
    if args.file == "-":
        stdio = sys.stdout if exporting else sys.stdin
        return asyncio.run(transfer_opt_outs(settings, stdio, file_format, exporting, args.file))
    mode = "w" if exporting else "r"
    with Path(args.file).open(mode, encoding="utf-8", newline="") as stream:
        return asyncio.run(transfer_opt_outs(settings, stream, file_format, exporting, args.file))


async def transfer_opt_outs(
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
        print(
            f"imported {result.added} opt-outs ({result.already} were opted out already, "
            f"{len(result.errors)} rows skipped)",
            file=sys.stderr,
        )
        return 1 if result.errors else 0
    finally:
        await runtime.stop()
        await client.aclose()
