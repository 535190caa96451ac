"""Import OHLCV bars from a CSV or Parquet file: all rows or none."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pandas as pd
import pyarrow
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clm_project.exceptions import InvalidInput
from registry.models import Timeframe
from training.data.bars import BarImportError, bars_import, read_bar_file, validate_bars
from training.management.checks import symbol_checked
from training.management.progress import Progress

# What reading a file that is not the CSV or Parquet it claims to be raises, from pandas, pyarrow,
# the codecs and the decompressors.
_UNREADABLE = (
    pd.errors.EmptyDataError,
    pd.errors.ParserError,
    pyarrow.ArrowException,
    UnicodeError,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
    TypeError,
)


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why `path` could not be read, in one line a person can act on."""
    if isinstance(exc, pd.errors.EmptyDataError):
        return "the file is empty"
    if isinstance(exc, UnicodeError):
        with path.open("rb") as stream:
            head = stream.read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return "the file is UTF-16 text; save it as UTF-8"
        return "not UTF-8 text (a binary file?); save the CSV as UTF-8"
    if isinstance(exc, pd.errors.ParserError):
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:
            expected, line, saw = fields.groups()
            return f"line {line} has {saw} fields where the header has {expected}"
        return f"not a well-formed CSV file ({str(exc).strip().splitlines()[0]})"
    if isinstance(exc, pyarrow.ArrowException) or path.suffix.lower() in {".parquet", ".pq"}:
        return f"not a readable Parquet file ({str(exc).strip().splitlines()[0]})"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot be read ({first})"


class Command(BaseCommand):
    help = "Import bars (columns: timestamp, open, high, low, close, volume) from CSV or Parquet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--timeframe", required=True, choices=Timeframe.values)

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        symbol = symbol_checked(options["symbol"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        progress = Progress("import", 3)
        try:
            try:
                frame = read_bar_file(path)
                progress.update(1, "read")
                clean = validate_bars(frame)
            except BarImportError:
                raise
            except _UNREADABLE as exc:
                raise CommandError(
                    f"{path.name}: nothing imported: {unreadable_reason(path, exc)}"
                ) from exc
            progress.update(2, "validated")
            summary = bars_import(frame=clean, symbol=symbol, timeframe=options["timeframe"])
        except BarImportError as exc:
            raise CommandError(f"{path.name}: nothing imported, bad rows:\n{exc}") from exc
        except InvalidInput as exc:
            raise CommandError(exc.message) from exc
        if summary.rows == 0:
            raise CommandError(f"{path.name}: nothing imported: the file has a header but no rows")
        progress.done("stored")
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {summary.rows} bars of {summary.symbol} {summary.timeframe} "
                f"({summary.inserted} new, {summary.updated} replaced)"
            )
        )
