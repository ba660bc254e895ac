"""Command line: ``otpservice serve``, ``worker``, ``config check FILE``, ``secrets generate
DIR``, ``opt-outs export`` / ``import``, ``openapi``."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from otpservice.cli.background import opt_outs as opt_outs_command
from otpservice.cli.background import worker as worker_command
from otpservice.cli.secrets import generate as generate_secrets
from otpservice.cli.serve import serve as serve_command
from otpservice.cli.tables import limits_table
from otpservice.errors import ConfigError
from otpservice.validation import check_without_secrets, load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence


def openapi_document() -> str:
    """The OpenAPI spec of the app, as committed in ``openapi/openapi.json``."""
    from otpservice.app import create_app
    from otpservice.web.openapi import openapi_document as finished_spec

    app = create_app(load_settings(dev=True, environ={}))
    return json.dumps(finished_spec(app), indent=2, sort_keys=True) + "\n"


def _config_check(args: argparse.Namespace) -> int:
    if not args.no_secrets:
        settings = load_settings(args.file)
        print(f"{args.file}: valid\n")
        print(limits_table(settings))
        return 0
    checked = check_without_secrets(args.file)
    print(f"{args.file}: valid, except the secrets: they were not checked (--no-secrets)")
    for key, path in checked.unread_files.items():
        print(f"  not read: {key} = {path}")
    print()
    print(limits_table(checked.settings))
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
    check.add_argument(
        "--no-secrets",
        action="store_true",
        help="check all but the secrets: their files (which may exist only in the pod) are not "
        "read, their values not checked",
    )
    check.set_defaults(run=_config_check)

    secrets = commands.add_parser("secrets", help="secrets tools")
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    generate = secrets_commands.add_parser(
        "generate",
        help="write a new set of secrets and an API token, one file each (mode 0600); "
        "prints no value",
    )
    generate.add_argument("directory", help="where to write them: a new or empty directory")
    generate.add_argument(
        "--client", default="app", help="the API client the token is for (default: app)"
    )
    generate.set_defaults(run=generate_secrets)

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
