"""Generate seeded synthetic OHLCV bars with controllable regimes and store them."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from registry.models import Timeframe
from training.data.bars import bars_frame, bars_import, load_bars
from training.data.synthetic import REGIMES, generate_bars, timeframe_seconds
from training.management.checks import symbol_checked
from training.management.progress import Progress

# A bound on one run (a million hourly bars is 114 years) that keeps memory and time sane.
MAX_BARS = 1_000_000
# Bars live between the Unix epoch and a date every library here can represent (pandas' ns
# timestamps end in 2262; Python's datetime in year 9999).
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2200, 1, 1)


def parse_regimes(text: str | None) -> list[tuple[str, int]] | None:
    """'trending:5000,volatile:2000' -> [('trending', 5000), ('volatile', 2000)]."""
    if not text:
        return None
    segments = []
    for part in text.split(","):
        name, _, count = part.strip().partition(":")
        if name not in REGIMES:
            raise CommandError(f"unknown regime {name!r}; one of {', '.join(REGIMES)}")
        try:
            n = int(count)
        except ValueError:
            raise CommandError(f"segment {part!r} needs a bar count, e.g. {name}:1000") from None
        if n <= 0:
            raise CommandError(f"regime segment {part!r}: bar count must be positive")
        segments.append((name, n))
    return segments


def symbol_seed(seed: int, symbol: str) -> int:
    """One stream per symbol, stable across runs and Python versions."""
    return (seed * 1_000_003 + zlib.crc32(symbol.encode())) % (2**32)


class Command(BaseCommand):
    help = "Generate deterministic synthetic bars with regimes and store them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--symbol", action="append", required=True,
            help="Symbol to generate; repeat or comma-separate for several.",
        )  # fmt: skip
        parser.add_argument("--timeframe", default="1h", choices=Timeframe.values)
        parser.add_argument("--bars", type=int, default=20_000)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--start", default="2023-01-01T00:00:00")
        parser.add_argument(
            "--regimes",
            help="Stage exact regime segments, e.g. trending:5000,volatile:2000 (sum = --bars).",
        )
        parser.add_argument(
            "--append", action="store_true",
            help="Continue after the last stored bar of each symbol (to stage new market data).",
        )  # fmt: skip

    def handle(self, *args, **options) -> None:
        symbols = [s for raw in options["symbol"] for s in raw.split(",") if s.strip()]
        symbols = list(dict.fromkeys(symbol_checked(s) for s in symbols))
        if not symbols:
            raise CommandError("give at least one --symbol")
        n_bars = options["bars"]
        if not 2 <= n_bars <= MAX_BARS:
            raise CommandError(f"--bars {n_bars}: must be between 2 and {MAX_BARS:,}")
        regimes = parse_regimes(options["regimes"])
        if regimes and sum(n for _, n in regimes) != n_bars:
            raise CommandError(
                f"--regimes covers {sum(n for _, n in regimes)} bars but --bars is {n_bars}"
            )
        timeframe = options["timeframe"]
        step = timedelta(seconds=timeframe_seconds(timeframe))
        start = _start_checked(options["start"])

        # Everything is generated and checked first, then stored in one transaction: a bad
        # argument or a failure on any symbol writes nothing.
        series = []
        progress = Progress("generate", len(symbols))
        for i, symbol in enumerate(symbols):
            first, start_price = start, None
            seed = symbol_seed(options["seed"], symbol)
            if options["append"]:
                existing = load_bars(symbol, timeframe)
                if len(existing):
                    last = existing.timestamp[-1].astype("datetime64[s]").item()
                    first = last + step
                    start_price = float(existing.close[-1])
                    seed = symbol_seed(options["seed"] + len(existing), symbol)
            _range_check(symbol, first, n_bars, step)
            kwargs = {"start_price": start_price} if start_price else {}
            try:
                bars, labels = generate_bars(
                    n_bars, seed=seed, timeframe=timeframe, start=first.isoformat(),
                    regimes=regimes, **kwargs,
                )  # fmt: skip
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            series.append((symbol, bars, labels))
            progress.update(i + 1, symbol)
        with transaction.atomic():
            summaries = [
                bars_import(frame=bars_frame(bars), symbol=symbol, timeframe=timeframe)
                for symbol, bars, _ in series
            ]
        for (symbol, _, labels), summary in zip(series, summaries, strict=True):
            codes, sizes = np.unique(np.asarray(labels), return_counts=True)
            counts = {REGIMES[int(k)]: int(v) for k, v in zip(codes, sizes, strict=True)}
            self.stdout.write(
                f"{symbol} {timeframe}: {summary.rows} bars "
                f"({summary.inserted} new, {summary.updated} replaced) "
                f"{summary.first:%Y-%m-%d %H:%M} .. {summary.last:%Y-%m-%d %H:%M}; "
                f"regimes {counts}"
            )


def _start_checked(text: str) -> datetime:
    """--start as a naive UTC datetime: ISO 8601, without a time zone or with UTC's."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"--start {text!r}: not an ISO 8601 date/time (e.g. 2023-01-01T00:00:00)"
        ) from None
    if value.tzinfo is not None:
        if value.utcoffset() != timedelta(0):
            raise CommandError(f"--start {text!r}: give the time in UTC")
        value = value.replace(tzinfo=None)
    return value


def _range_check(symbol: str, first: datetime, n_bars: int, step: timedelta) -> None:
    """The series lies between EARLIEST and LATEST (computed without overflowing datetime)."""
    span = (n_bars - 1) * step
    if first < EARLIEST or LATEST - first <= span:
        try:
            last = f"{first + span:%Y-%m-%d %H:%M}"
        except OverflowError:
            last = "beyond the year 9999"
        raise CommandError(
            f"{symbol}: the bars would run from {first:%Y-%m-%d %H:%M} to {last}; "
            f"they must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} "
            "(choose another --start or fewer --bars)"
        )
