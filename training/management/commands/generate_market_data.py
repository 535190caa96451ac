"""Generate seeded synthetic OHLCV bars with controllable regimes and store them."""

from __future__ import annotations

import zlib
from datetime import timedelta

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.models import Timeframe
from training.data.bars import bars_frame, bars_import, load_bars
from training.data.synthetic import REGIMES, generate_bars, timeframe_seconds
from training.management.progress import Progress


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
        symbols = [s.strip().upper() for raw in options["symbol"] for s in raw.split(",")]
        symbols = [s for s in symbols if s]
        if not symbols:
            raise CommandError("give at least one --symbol")
        n_bars = options["bars"]
        if n_bars < 2:
            raise CommandError("--bars must be at least 2")
        regimes = parse_regimes(options["regimes"])
        if regimes and sum(n for _, n in regimes) != n_bars:
            raise CommandError(
                f"--regimes covers {sum(n for _, n in regimes)} bars but --bars is {n_bars}"
            )
        timeframe = options["timeframe"]
        progress = Progress("generate", len(symbols))
        for i, symbol in enumerate(symbols):
            start, start_price = options["start"], None
            seed = symbol_seed(options["seed"], symbol)
            if options["append"]:
                existing = load_bars(symbol, timeframe)
                if len(existing):
                    step = timedelta(seconds=timeframe_seconds(timeframe))
                    last = existing.timestamp[-1].astype("datetime64[s]").item()
                    start = (last + step).isoformat()
                    start_price = float(existing.close[-1])
                    seed = symbol_seed(options["seed"] + len(existing), symbol)
            kwargs = {"start_price": start_price} if start_price else {}
            try:
                bars, labels = generate_bars(
                    n_bars, seed=seed, timeframe=timeframe, start=start, regimes=regimes, **kwargs
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            summary = bars_import(frame=bars_frame(bars), symbol=symbol, timeframe=timeframe)
            codes, sizes = np.unique(np.asarray(labels), return_counts=True)
            counts = {REGIMES[int(k)]: int(v) for k, v in zip(codes, sizes, strict=True)}
            progress.update(i + 1, symbol)
            self.stdout.write(
                f"{symbol} {timeframe}: {summary.rows} bars "
                f"({summary.inserted} new, {summary.updated} replaced) "
                f"{summary.first:%Y-%m-%d %H:%M} .. {summary.last:%Y-%m-%d %H:%M}; "
                f"regimes {counts}"
            )
