"""Command line: ``otpservice serve``, ``worker``, ``config check FILE``, ``opt-outs export`` /
``import``, ``openapi``."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from otpservice.cli.background import opt_outs as opt_outs_command
from otpservice.cli.background import worker as worker_command
from otpservice.cli.serve import serve as serve_command
from otpservice.cli.tables import limits_table
from otpservice.errors import ConfigError
from otpservice.validation import load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence


def openapi_document() -> str:
    """The OpenAPI spec of the app, as committed in ``openapi/openapi.json``."""
    from otpservice.app import create_app

    app = create_app(load_settings(dev=True, environ={}))
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"


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
    parser.add_argument(
        "--version", action="version", version=f"otpservice {metadata.version('otpservice')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--dev", action="store_true", help="development mode: no set-up needed")
    serve.add_argument("--config", help="TOML config file (default: $OTP_CONFIG)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="processes serving the API (default 1)")
    serve.set_defaults(run=serve_command)

    worker = commands.add_parser(
        "worker", help="only deliver queued SMS (for a separate deployment of workers)"
    )
    worker.add_argument("--config", help="TOML config file (default: $OTP_CONFIG)")
    worker.set_defaults(run=worker_command)

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
            "--format",
            choices=["csv", "jsonl"],
            help="default: csv for a .csv file name, else jsonl",
        )
        transfer.set_defaults(run=opt_outs_command)

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
