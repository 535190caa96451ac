"""Import OHLCV bars from a CSV or Parquet file: all rows or none."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clm_project.exceptions import InvalidInput
from registry.models import Timeframe
from training.data.bars import BarImportError, bars_import, read_bar_file, validate_bars
from training.management.progress import Progress


class Command(BaseCommand):
    help = "Import bars (columns: timestamp, open, high, low, close, volume) from CSV or Parquet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--timeframe", required=True, choices=Timeframe.values)

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        progress = Progress("import", 3)
        try:
            frame = read_bar_file(path)
            progress.update(1, "read")
            clean = validate_bars(frame)
            progress.update(2, "validated")
            summary = bars_import(
                frame=clean, symbol=options["symbol"], timeframe=options["timeframe"]
            )
        except BarImportError as exc:
            raise CommandError(f"{path.name}: nothing imported, bad rows:\n{exc}") from exc
        except InvalidInput as exc:
            raise CommandError(exc.message) from exc
        progress.done("stored")
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {summary.rows} bars of {summary.symbol} {summary.timeframe} "
                f"({summary.inserted} new, {summary.updated} replaced)"
            )
        )
