"""Market data in and out of the database: bulk upsert, fast load into numpy, the loader interface.

Files and batches are parsed and checked by `training.data.ingest`; this module stores them.

`fetch_training_data(symbol, timeframe, window)` is what the pipeline calls; the setting
CLM_DATA_LOADER names the callable, so another source (an exchange client, a warehouse) plugs in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.utils.module_loading import import_string

from clm_project.exceptions import InvalidInput
from registry.models import Timeframe
from training.data.dataset import Bars
from training.data.ingest import ParsedBars, parse_columns_option, read_bar_rows, read_bar_source

Window = tuple[datetime | None, datetime | None] | None
DataLoader = Callable[[str, str, Window], Bars]

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class ImportSummary:
    symbol: str
    timeframe: str
    rows: int
    inserted: int
    updated: int
    first: datetime | None
    last: datetime | None


# ---------------------------------------------------------------------------------------------
# Loading


def load_bars(
    symbol: str, timeframe: str, start: datetime | None = None, end: datetime | None = None
) -> Bars:
    """All bars of one series in [start, end), oldest first, as numpy arrays.

    On PostgreSQL the rows stream out with COPY as CSV and are parsed by pandas' C reader, which is
    several times faster than building a Python tuple per row.
    """
    where = ["symbol = %s", "timeframe = %s"]
    params: list[object] = [symbol.upper(), timeframe]
    if start is not None:
        where.append("timestamp >= %s")
        params.append(start)
    if end is not None:
        where.append("timestamp < %s")
        params.append(end)
    if connection.vendor == "postgresql":
        epoch, values = _copy_binary(" AND ".join(where), params)
        if epoch is None:
            return _empty_bars()
    else:
        from training.models import Bar

        qs = Bar.objects.filter(symbol=symbol.upper(), timeframe=timeframe)
        if start is not None:
            qs = qs.filter(timestamp__gte=start)
        if end is not None:
            qs = qs.filter(timestamp__lt=end)
        rows = list(qs.order_by("timestamp").values_list(*COLUMNS))
        if not rows:
            return _empty_bars()
        epoch = np.array([int(r[0].timestamp()) for r in rows], dtype=np.int64)
        matrix = np.array([r[1:] for r in rows], dtype=np.float64)
        values = {c: matrix[:, i] for i, c in enumerate(COLUMNS[1:])}
    return Bars(timestamp=epoch.astype("datetime64[s]"), **values)


# COPY BINARY rows of (int8, float8 x 5): a field count, then (length, value) per field, big-endian.
_ROW = np.dtype(
    [("n", ">i2")]
    + [
        item
        for name in COLUMNS
        for item in ((f"{name}_len", ">i4"), (name, ">i8" if name == "timestamp" else ">f8"))
    ]
)
_HEADER = 19  # signature (11) + flags (4) + header extension length (4)
_PG_EPOCH_OFFSET = 946_684_800  # 2000-01-01 in Unix seconds


def _copy_binary(where: str, params: list[object]) -> tuple[np.ndarray | None, dict]:
    sql = (
        "SELECT timestamp, open, high, low, close, volume "
        f"FROM training_bar WHERE {where} ORDER BY timestamp"
    )
    buffer = bytearray()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        query = raw.mogrify(sql, params)
        with raw.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)") as copy:
            for chunk in copy:
                buffer += chunk
    body = memoryview(buffer)[_HEADER : len(buffer) - 2]  # the trailer is a field count of -1
    if len(body) == 0:
        return None, {}
    rows = np.frombuffer(body, dtype=_ROW)
    # timestamptz travels as microseconds since 2000-01-01 UTC.
    epoch = rows["timestamp"].astype(np.int64) // 1_000_000 + _PG_EPOCH_OFFSET
    return epoch, {c: rows[c].astype(np.float64) for c in COLUMNS[1:]}


def bars_last(symbol: str, timeframe: str, count: int, *, end: datetime | None = None) -> Bars:
    """The last `count` bars of a series (at or before `end`), oldest first."""
    from training.models import Bar

    bars = Bar.objects.filter(symbol=symbol, timeframe=timeframe)
    if end is not None:
        bars = bars.filter(timestamp__lte=end)
    first = list(bars.order_by("-timestamp").values_list("timestamp", flat=True)[count - 1 : count])
    return load_bars(
        symbol,
        timeframe,
        first[0] if first else None,
        end + timedelta(seconds=1) if end is not None else None,
    )


def as_datetime64(moment: datetime) -> np.datetime64:
    """An aware datetime as a bar timestamp (datetime64[s], UTC)."""
    return np.datetime64(int(moment.timestamp()), "s")


def as_datetime(moment: np.datetime64) -> datetime:
    """A bar timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(int(moment.astype("datetime64[s]").astype("int64")), tz=UTC)


def _empty_bars() -> Bars:
    empty = np.empty(0, dtype=np.float64)
    return Bars(
        timestamp=np.empty(0, dtype="datetime64[s]"),
        open=empty, high=empty, low=empty, close=empty, volume=empty,
    )  # fmt: skip


# (symbol, timeframe, start, end) -> (the series' BarRevision when read, its bars), oldest first.
_CACHED: OrderedDict[tuple[str, str, datetime | None, datetime | None], tuple[int, Bars]] = (
    OrderedDict()
)


def fetch_training_data(symbol: str, timeframe: str, window: Window = None) -> Bars:
    """The default data loader: bars from the project's own database.

    A worker keeps the bars it read (up to settings.CLM_BARS_CACHE_BYTES) with the series'
    revision, which the database changes on every write to the series (training.models.
    BarRevision): while it reads the same revision, the stored bars are the ones it holds. The
    revision is read before the bars, so bars written between the two reads are at worst read
    again next time, never held under a revision they do not match. The arrays are read-only:
    the next job gets them too.
    """
    start, end = window if window else (None, None)
    symbol = symbol.upper()
    if settings.CLM_BARS_CACHE_BYTES <= 0 or connection.vendor != "postgresql":
        return load_bars(symbol, timeframe, start, end)
    from training.models import BarRevision

    revision = (
        BarRevision.objects.filter(symbol=symbol, timeframe=timeframe)
        .values_list("revision", flat=True)
        .first()
    )
    if revision is None:  # no revision yet (nothing stored): nothing to hold the bars under
        return load_bars(symbol, timeframe, start, end)
    key = (symbol, timeframe, start, end)
    held = _CACHED.get(key)
    if held is not None and held[0] == revision:
        _CACHED.move_to_end(key)
        return held[1]
    bars = load_bars(symbol, timeframe, start, end)
    for array in (bars.timestamp, bars.open, bars.high, bars.low, bars.close, bars.volume):
        array.flags.writeable = False
    _CACHED[key] = (revision, bars)
    _CACHED.move_to_end(key)
    budget = settings.CLM_BARS_CACHE_BYTES
    while _CACHED and sum(_nbytes(b) for _, b in _CACHED.values()) > budget:
        _CACHED.popitem(last=False)
    return bars


def _nbytes(bars: Bars) -> int:
    return sum(
        a.nbytes for a in (bars.timestamp, bars.open, bars.high, bars.low, bars.close, bars.volume)
    )


def get_data_loader() -> DataLoader:
    return import_string(settings.CLM_DATA_LOADER)


# ---------------------------------------------------------------------------------------------
# Importing


def bars_import(*, frame: pd.DataFrame, symbol: str, timeframe: str) -> ImportSummary:
    """Upsert checked bars (training.data.ingest's frame) in one transaction: all or none."""
    if timeframe not in Timeframe.values:
        raise InvalidInput(f"unknown timeframe {timeframe!r}", field="timeframe")
    symbol = symbol.strip().upper()
    if not symbol:
        raise InvalidInput("symbol is required", field="symbol")
    n = len(frame)
    if n == 0:
        return ImportSummary(symbol, timeframe, 0, 0, 0, None, None)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            inserted = _copy_upsert(frame, symbol, timeframe)
        else:
            inserted = _orm_upsert(frame, symbol, timeframe)
    first = frame["timestamp"].iloc[0].to_pydatetime()
    last = frame["timestamp"].iloc[-1].to_pydatetime()
    return ImportSummary(symbol, timeframe, n, inserted, n - inserted, first, last)


def bars_ingest(
    *,
    symbol: str,
    timeframe: str,
    rows: list | None = None,
    body: bytes | None = None,
    tz: str = "UTC",
    columns: str = "",
    date_format: str | None = None,
) -> tuple[ImportSummary, ParsedBars]:
    """A batch of bars, JSON `rows` or a file's `body`, read by training.data.ingest and upserted:
    the one path of POST /clm/bars and of the broker's `bars` event. Raises BarImportError."""
    options = {
        "timeframe": timeframe,
        "tz": tz,
        "columns": parse_columns_option(columns),
        "date_format": date_format,
    }
    parsed = (
        read_bar_source(body, name="body", **options)
        if body is not None
        else read_bar_rows(rows, **options)
    )
    return bars_import(frame=parsed.frame, symbol=symbol, timeframe=timeframe), parsed


def _copy_upsert(frame: pd.DataFrame, symbol: str, timeframe: str) -> int:
    """COPY the bars in binary into a temporary table, then one upsert that counts the inserted
    rows (xmax = 0) and leaves unchanged bars unwritten, so a replayed batch costs little."""
    with connection.cursor() as cursor:
        # Dropped explicitly too: inside an outer transaction ON COMMIT never fires.
        cursor.execute("DROP TABLE IF EXISTS clm_bar_stage")
        cursor.execute(
            "CREATE TEMP TABLE clm_bar_stage (timestamp timestamptz, open float8, high float8, "
            "low float8, close float8, volume float8) ON COMMIT DROP"
        )
        with cursor.cursor.copy("COPY clm_bar_stage FROM STDIN WITH (FORMAT binary)") as copy:
            copy.write(_copy_binary_rows(frame))
        cursor.execute(
            "WITH written AS ("
            " INSERT INTO training_bar "
            " (symbol, timeframe, timestamp, open, high, low, close, volume)"
            " SELECT %s, %s, timestamp, open, high, low, close, volume FROM clm_bar_stage"
            " ON CONFLICT (symbol, timeframe, timestamp) DO UPDATE SET open = EXCLUDED.open,"
            " high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,"
            " volume = EXCLUDED.volume"
            " WHERE (training_bar.open, training_bar.high, training_bar.low, training_bar.close,"
            " training_bar.volume) IS DISTINCT FROM"
            " (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)"
            " RETURNING xmax = 0 AS inserted"
            ") SELECT count(*) FILTER (WHERE inserted) FROM written",
            [symbol, timeframe],
        )
        inserted = cursor.fetchone()[0]
        cursor.execute("DROP TABLE clm_bar_stage")
        # Keep the planner's row estimates right after a load that grew the table by half or more
        # (smaller growth is left to autovacuum: ANALYZE costs about 0.3 s on a busy table).
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'training_bar'::regclass")
        if inserted > 10_000 and inserted > 0.5 * max(cursor.fetchone()[0], 0):
            cursor.execute("ANALYZE training_bar")
    return inserted


def _copy_binary_rows(frame: pd.DataFrame) -> bytes:
    """The frame as a COPY BINARY stream (the layout _ROW reads back in load_bars)."""
    rows = np.empty(len(frame), dtype=_ROW)
    rows["n"] = len(COLUMNS)
    for name in COLUMNS:
        rows[f"{name}_len"] = 8
    moments = frame["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    rows["timestamp"] = moments.astype(np.int64) - _PG_EPOCH_OFFSET * 1_000_000
    for name in COLUMNS[1:]:
        rows[name] = frame[name].to_numpy(dtype=np.float64)
    header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, no extension
    return header + rows.tobytes() + b"\xff\xff"


def _orm_upsert(frame: pd.DataFrame, symbol: str, timeframe: str) -> int:
    from training.models import Bar

    before = Bar.objects.filter(symbol=symbol, timeframe=timeframe).count()
    objs = [
        Bar(
            symbol=symbol,
            timeframe=timeframe,
            timestamp=row.timestamp.to_pydatetime(),
            open=row.open,
            high=row.high,
            low=row.low,
            close=row.close,
            volume=row.volume,
        )
        for row in frame.itertuples(index=False)
    ]
    Bar.objects.bulk_create(
        objs,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["symbol", "timeframe", "timestamp"],
        update_fields=["open", "high", "low", "close", "volume"],
    )
    return Bar.objects.filter(symbol=symbol, timeframe=timeframe).count() - before


def bars_frame(bars: Bars) -> pd.DataFrame:
    """A validated-shape frame from in-memory Bars (the generator's output) for bars_import."""
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(bars.timestamp.astype("datetime64[s]"), utc=True),
            "open": bars.open,
            "high": bars.high,
            "low": bars.low,
            "close": bars.close,
            "volume": bars.volume,
        }
    )
