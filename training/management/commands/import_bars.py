"""Import OHLCV bars from a CSV, TSV or Parquet file in any shape training.data.ingest reads."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clm_project.exceptions import InvalidInput
from registry.models import Timeframe
from training.data.bars import bars_import
from training.data.ingest import BarImportError, describe, parse_columns_option, read_bar_source
from training.management.checks import symbol_checked
from training.management.progress import Progress


class Command(BaseCommand):
    help = (
        "Import bars from CSV, TSV or Parquet, all rows or none. Headers are matched by their "
        "usual names (Date, Open, <OPEN>, o, ...); Binance klines and MetaTrader are recognised."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--timeframe", required=True, choices=Timeframe.values)
        parser.add_argument(
            "--tz",
            default="UTC",
            help="time zone of timestamps without an offset (default UTC), e.g. America/New_York",
        )
        parser.add_argument(
            "--columns",
            default="",
            help="override the column mapping: timestamp=Date,close=Last (names, or 1-based "
            "numbers for a file without a header; date=...,time=... for split columns)",
        )
        parser.add_argument(
            "--date-format", default=None, help="strptime format of the timestamps (%%d/%%m/%%Y)"
        )

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        symbol = symbol_checked(options["symbol"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        progress = Progress("import", 2)
        try:
            parsed = read_bar_source(
                path,
                timeframe=options["timeframe"],
                tz=options["tz"],
                columns=parse_columns_option(options["columns"]),
                date_format=options["date_format"],
            )
            progress.update(1, "read and checked")
            summary = bars_import(frame=parsed.frame, symbol=symbol, timeframe=options["timeframe"])
        except BarImportError as exc:
            reason = exc.message.removeprefix(f"{path.name}: ")
            raise CommandError(f"{path.name}: nothing imported: {reason}") from exc
        except InvalidInput as exc:
            raise CommandError(exc.message) from exc
        progress.done("stored")
        self.stdout.write(f"read {path.name}: {describe(parsed)}")
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {summary.rows} bars of {summary.symbol} {summary.timeframe} "
                f"({summary.inserted} new, {summary.updated} replaced) "
                f"from {summary.first:%Y-%m-%d %H:%M} to {summary.last:%Y-%m-%d %H:%M} UTC"
            )
        )
