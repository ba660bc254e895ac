"""Opt-outs in files: export for backup, import for restoring or migrating from a provider.

Two formats, one row per number with the columns ``phone`` (E.164), ``opted_out_at``
(RFC 3339), ``source``, ``sender`` and ``detail``: CSV with a header line, or JSON lines. On
import only ``phone`` is required; ``opted_out_at`` defaults to now and ``source`` to
``import``; other CSV columns are ignored, and times need their zone (``Z`` or an offset). A
number already opted out keeps its record. A bad row is reported with its line number and
skipped; the others are imported. An import does not announce each number to the app.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime  # noqa: TC003 (msgspec reads the annotations at run time)
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from otpservice.errors import InvalidInput
from otpservice.models import datetime_from_ms

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO

    from otpservice.usecases.optouts import OptOuts

FileFormat = Literal["csv", "jsonl"]
COLUMNS = ("phone", "opted_out_at", "source", "sender", "detail")
_PAGE = 500


class OptOutRow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One opt-out as a file holds it."""

    phone: str
    opted_out_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] = "import"
    sender: Annotated[str, msgspec.Meta(max_length=64)] = ""
    detail: Annotated[str, msgspec.Meta(max_length=60)] = ""


class ImportResult(msgspec.Struct, frozen=True):
    """What an import did: numbers newly opted out, ones already opted out, bad rows."""

    added: int
    already: int
    errors: list[str]


def format_of(path: str, given: FileFormat | None) -> FileFormat:
    """The format to use: the one given, else from the file name (JSON lines by default)."""
    if given is not None:
        return given
    return "csv" if path.lower().endswith(".csv") else "jsonl"


async def export_opt_outs(optouts: OptOuts, out: IO[str], file_format: FileFormat) -> int:
    """Write every opt-out to ``out``, a page at a time; how many were written."""
    writer = csv.writer(out, lineterminator="\n") if file_format == "csv" else None
    if writer is not None:
        writer.writerow(COLUMNS)
    written, after = 0, ""
    while True:
        records, following = await optouts.page(after, _PAGE)
        for record in records:
            row = OptOutRow(
                phone=record.phone,
                opted_out_at=datetime_from_ms(record.since_ms),
                source=record.source,
                sender=record.sender,
                detail=record.detail,
            )
            if writer is not None:
                writer.writerow(_csv_values(row))
            else:
                out.write(msgspec.json.encode(row).decode() + "\n")
            written += 1
        if following is None:
            return written
        after = following


async def import_opt_outs(
    optouts: OptOuts, source: IO[str], file_format: FileFormat
) -> ImportResult:
    """Opt out every number in ``source``."""
    added = already = 0
    errors: list[str] = []
    for line, row in _rows(source, file_format):
        if isinstance(row, str):
            errors.append(f"line {line}: {row}")
            continue
        since = int(row.opted_out_at.timestamp() * 1000) if row.opted_out_at else None
        try:
            new = await optouts.restore(
                row.phone,
                source=row.source,
                sender=row.sender,
                detail=row.detail,
                since_ms=since,
            )
        except InvalidInput as exc:
            errors.append(f"line {line}: {exc.detail}")
            continue
        if new:
            added += 1
        else:
            already += 1
    return ImportResult(added, already, errors)


def _rows(source: IO[str], file_format: FileFormat) -> Iterator[tuple[int, OptOutRow | str]]:
    """Each row with its line number, or the reason it cannot be read."""
    if file_format == "csv":
        reader = csv.DictReader(source)
        if reader.fieldnames is None or "phone" not in reader.fieldnames:
            yield 1, "a CSV header line naming at least the column phone is required"
            return
        for values in reader:
            # Other columns (a provider's export has its own) are ignored.
            cells = {k: v for k, v in values.items() if k in COLUMNS and v not in (None, "")}
            yield reader.line_num, _convert(cells)
        return
    for line, text in enumerate(source, start=1):
        if not text.strip():
            continue
        try:
            yield line, _convert(json.loads(text))
        except ValueError as exc:
            yield line, f"not JSON: {exc}"


def _convert(raw: object) -> OptOutRow | str:
    try:
        return msgspec.convert(raw, OptOutRow, strict=False)
    except msgspec.ValidationError as exc:
        return str(exc)


def _csv_values(row: OptOutRow) -> list[str]:
    at = row.opted_out_at
    return [row.phone, at.isoformat() if at else "", row.source, row.sender, row.detail]
