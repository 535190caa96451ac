"""Reading bars from the files and batches people actually have: one parser for every door.

`read_bar_source` takes a file (CSV, TSV, TXT or Parquet, by name or by content) and
`read_bar_rows` a batch of JSON rows; both return `ParsedBars`, a clean frame (UTC timestamps,
float prices, oldest first) and the notes that say what was detected, or raise `BarImportError`
with one message naming what was found, what was tried and the flag that fixes it. The import
command, `POST /clm/bars` and the broker's `bars` event all call them, so a file is read the same
way whichever door it comes through. No ORM here: the database side is `training.data`.

What is recognised:
- separator comma, semicolon, tab or pipe, and decimal commas (`100,5`) when the separator is not a
  comma; UTF-8 (with or without BOM) or Windows-1252 text, gzip-compressed or not;
- a header row or none; header names matched case-insensitively, with `<...>` stripped, from
  ALIASES (Date+Time split into two columns, an unnamed first column holding dates); extra columns
  ignored;
- headerless layouts: Binance klines (12 columns, open time in epoch ms or us), MetaTrader 4
  (date, time, open, high, low, close, volume) and plain timestamp, open, high, low, close, volume;
- timestamps as epoch seconds, milliseconds, microseconds or nanoseconds (chosen by magnitude),
  ISO 8601 with or without an offset, or the DATE_FORMATS below; naive ones are read in `tz`.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from clm_project.exceptions import InvalidInput

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICES = COLUMNS[1:5]
MAX_REPORTED_ERRORS = 50
SAMPLE_CHARS, SAMPLE_LINES = 65_536, 200  # what decides separator, header and column types

TIMEFRAME_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}

# Normalised header names (lowercase, `<>` and surrounding space stripped), best first.
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp", "datetime", "date_time", "date time", "open_time", "open time", "opentime",
        "gmt time", "local time", "time", "date", "ts",
    ),
    "open": ("open", "o", "open_price", "openprice"),
    "high": ("high", "h", "high_price", "highprice"),
    "low": ("low", "l", "low_price", "lowprice"),
    "close": ("close", "c", "close_price", "closeprice"),
    "volume": ("volume", "tickvol", "tick_volume", "tick volume", "vol", "v", "base_volume"),
}  # fmt: skip
UNNAMED_FIRST = ("", "unnamed: 0", "index")
TIME_NAMES = {*ALIASES["timestamp"], *UNNAMED_FIRST}

# Tried in order on naive, non-ISO timestamps; the first that reads every row wins.
DATE_FORMATS = (
    "%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M", "%Y.%m.%d",
    "%d.%m.%Y %H:%M:%S.%f", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%Y%m%d %H:%M:%S", "%Y%m%d %H%M%S", "%Y%m%d %H:%M", "%Y%m%d",
    "%d-%b-%Y", "%d %b %Y", "%b %d, %Y", "%d-%b-%Y %H:%M",
)  # fmt: skip
# Day and month in either order: refused when both orders read every row.
AMBIGUOUS_FORMATS = (
    ("%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S"),
    ("%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M"),
    ("%m/%d/%Y", "%d/%m/%Y"),
    ("%m-%d-%Y", "%d-%m-%Y"),
)
EPOCH_UNITS = (  # (largest magnitude, unit, name): a 2024 date is 1.7e9 s, 1.7e12 ms, ...
    (1e11, "s", "seconds"),
    (1e14, "ms", "milliseconds"),
    (1e17, "us", "microseconds"),
    (float("inf"), "ns", "nanoseconds"),
)
SEPARATORS = {"\t": "tab", ";": "semicolon", ",": "comma", "|": "pipe"}
_OFFSET = re.compile(r"(?:z|[+-]\d\d:?\d\d)$", re.IGNORECASE)
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^[-+]?(\d+([.,]\d*)?|[.,]\d+)([eE][-+]?\d+)?$")


class BarImportError(InvalidInput):
    """Bars refused, nothing stored: `errors` lists each problem ('line N: reason' for rows).

    An InvalidInput, so the API answers it with a 400 carrying the list; the command prints it.
    """

    def __init__(self, errors: list[str], *, headline: str = "", bad_rows: int = 0) -> None:
        self.errors = errors
        self.headline = headline
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        lines = ([headline] if headline else []) + shown
        if more > 0:
            lines.append(f"... and {more} more problems")
        super().__init__("\n".join(lines), extra={"errors": {"bars": shown}, "bad_rows": bad_rows})


@dataclass(frozen=True)
class ParsedBars:
    frame: pd.DataFrame  # timestamp (datetime64[ns, UTC]), open, high, low, close, volume
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.frame)


@dataclass
class _Table:
    """Cells as read (strings, or typed values from Parquet/JSON), with each row's line label."""

    frame: pd.DataFrame
    lines: np.ndarray
    unit: str  # "line" or "row"
    header: bool
    notes: list[str]
    first: list[str] = field(default_factory=list)  # the first row of bars, as text

    def __post_init__(self) -> None:
        if not self.first and len(self.frame):
            self.first = [str(v) for v in self.frame.iloc[0]]


# ---------------------------------------------------------------------------------------------
# Entry points


def read_bar_source(
    source: Path | bytes,
    *,
    name: str = "",
    timeframe: str | None = None,
    tz: str = "UTC",
    columns: dict[str, str] | None = None,
    date_format: str | None = None,
) -> ParsedBars:
    """Read and check a whole file of bars (a path, or its bytes with `name` for messages)."""
    if isinstance(source, Path):
        name = name or source.name
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise BarImportError([f"{name}: cannot read the file ({exc.strerror})"]) from exc
    else:
        data = source
    name = name or "body"
    suffix = Path(name).suffix.lower()
    if suffix == ".gz" or data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name)
        suffix = Path(Path(name).stem).suffix.lower()
    if data[:4] == b"PAR1" or suffix in {".parquet", ".pq"}:
        table = _read_parquet(data, name)
    elif suffix in {"", ".csv", ".tsv", ".txt", ".prn"}:
        table = _read_text(data, name)
    else:
        raise BarImportError(
            [f"{name}: unsupported file type {suffix!r} (CSV, TSV, TXT or Parquet)"]
        )
    return _parse(table, name=name, timeframe=timeframe, tz=tz, columns=columns, fmt=date_format)


def read_bar_rows(
    rows: Any,
    *,
    timeframe: str | None = None,
    tz: str = "UTC",
    columns: dict[str, str] | None = None,
    date_format: str | None = None,
) -> ParsedBars:
    """Read a JSON batch: a list of objects (keys as in a header) or of lists (positional)."""
    if not isinstance(rows, list):
        raise BarImportError(["bars must be a list of rows"])
    if not rows:
        raise BarImportError(["bars is empty"])
    if all(isinstance(r, dict) for r in rows):
        frame = pd.DataFrame.from_records(rows)
        frame.columns = [str(c) for c in frame.columns]
        header = True
    elif all(isinstance(r, list) for r in rows):
        frame = pd.DataFrame.from_records(rows)
        header = False
    else:
        raise BarImportError(["bars must all be objects or all be lists"])
    for column in frame.columns:  # cells are numbers and strings, nothing nested
        if pd.api.types.is_object_dtype(frame[column]):
            frame[column] = frame[column].map(_scalar)
    table = _Table(frame, np.arange(1, len(frame) + 1), "row", header, [])
    return _parse(table, name="bars", timeframe=timeframe, tz=tz, columns=columns, fmt=date_format)


def _scalar(value: Any) -> Any:
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def parse_columns_option(text: str) -> dict[str, str]:
    """`timestamp=Date,close=Last` as a mapping; values may be 1-based column numbers."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise BarImportError([f"--columns: {part!r} is not NAME=COLUMN"])
        if key not in (*COLUMNS, "date", "time"):
            raise BarImportError(
                [f"--columns: unknown name {key!r}; one of {', '.join((*COLUMNS, 'date', 'time'))}"]
            )
        mapping[key] = value.strip()
    return mapping


# ---------------------------------------------------------------------------------------------
# Reading


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text (a BOM is fine), or the Windows-1252 of old exports; anything else is refused
    with what it looks like (UTF-16 from Excel's "Unicode text", a binary file)."""
    if not data.strip():
        raise BarImportError([f"{name}: the file is empty"])
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise BarImportError([f"{name}: the file is UTF-16 text; save it as UTF-8"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = "\x00"
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text[:65_536]):
        raise BarImportError(
            [f"{name}: not UTF-8 text (a binary file?); save the CSV as UTF-8 (or as Parquet)"]
        )
    return text


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise BarImportError([f"{name}: cannot be read ({exc})"]) from exc


def _sniff_separator(lines: list[str]) -> str:
    """The first of tab, semicolon, comma, pipe that splits every sampled line the same way."""
    sample = lines[:50]
    for sep in SEPARATORS:
        counts = {line.count(sep) for line in sample}
        if len(counts) == 1 and counts != {0}:
            return sep
    for sep in SEPARATORS:  # uneven (a ragged header): the one present on most lines
        if sum(sep in line for line in sample) > len(sample) / 2:
            return sep
    return ","


def _read_text(data: bytes, name: str) -> _Table:
    """Two passes: a sample decides separator, header, decimal mark and which columns are text;
    the full read then parses the number columns natively (fast) and keeps the rest as strings."""
    text = _decode(data, name)
    head = text[:SAMPLE_CHARS].splitlines()[:SAMPLE_LINES]
    if len(text) > SAMPLE_CHARS:
        head = head[:-1]  # possibly cut in the middle
    filled = [i for i, line in enumerate(head) if line.strip()]
    if not filled:
        raise BarImportError([f"{name}: the file is empty"])
    sep = _sniff_separator([head[i] for i in filled])
    first_row = "the header" if _is_header(head[filled[0]].split(sep)) else "the first row"
    sample = _read_csv(
        "\n".join(head[: filled[-1] + 1]), sep, name, first_row=first_row, dtype=str
    )  # blank lines kept, so that a parser error names the file's line
    sample = sample.fillna("").apply(lambda column: column.astype(str).str.strip())
    sample = sample[(sample != "").any(axis=1)].reset_index(drop=True)
    header = _is_header(list(sample.iloc[0]))
    body = sample.iloc[1:] if header else sample
    if body.empty:
        raise BarImportError([f"{name}: the file has a header but no rows"])
    decimal = "," if sep != "," and _decimal_comma(body) else "."
    names = [_normal(v) for v in sample.iloc[0]] if header else []
    text_columns = [
        i
        for i in range(sample.shape[1])
        if not body[i].map(_is_number).all()
        or (i < 2 if not header else names[i] in TIME_NAMES)  # times stay text: exact epochs
    ]
    skip = [filled[0]] if header else None
    frame = _read_csv(
        text, sep, name, first_row=first_row, dtype={i: str for i in text_columns},
        skiprows=skip, decimal=decimal,
    )  # fmt: skip
    lines = np.arange(1, len(frame) + 1)
    if header:
        lines[filled[0] :] += 1
    blank = np.ones(len(frame), dtype=bool)
    for column in frame.columns:
        values = frame[column]
        if column in text_columns or not pd.api.types.is_numeric_dtype(values):
            values = values.fillna("").astype(str).str.strip()
            if decimal == "," and column not in text_columns:
                values = _comma_to_point(values)
            frame[column] = values
            blank &= (values == "").to_numpy()
        else:
            blank &= values.isna().to_numpy()
    frame, lines = frame[~blank].reset_index(drop=True), lines[~blank]
    if header:
        frame.columns = [str(v) for v in sample.iloc[0]] + [
            f"column {i + 1}" for i in range(sample.shape[1], frame.shape[1])
        ]
    notes = [f"separator: {SEPARATORS[sep]}"] + (["decimal comma"] if decimal == "," else [])
    first = list(body.iloc[0]) if not body.empty else []
    return _Table(frame, lines, "line", header, notes, first)


def _read_csv(
    text: str, sep: str, name: str, *, first_row: str = "the header", **options: Any
) -> pd.DataFrame:
    try:
        return pd.read_csv(
            io.StringIO(text), sep=sep, header=None, keep_default_na=False,
            skip_blank_lines=False, skipinitialspace=True, engine="c", **options,
        )  # fmt: skip
    except (pd.errors.ParserError, ValueError) as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:
            expected, line, saw = fields.groups()
            reason = f"line {line} has {saw} fields where {first_row} has {expected}"
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no columns"
            reason = f"not a readable {SEPARATORS[sep]}-separated file ({first})"
        raise BarImportError([f"{name}: {reason}"]) from exc


def _is_number(cell: str) -> bool:
    return bool(_NUMBER.match(cell.replace(" ", ""))) if cell else True


def _is_header(cells: list[str]) -> bool:
    """A first row with no number in it is a header (a row of bars always has prices)."""
    return not any(_NUMBER.match(c.replace(" ", "")) for c in cells if c)


def _decimal_comma(frame: pd.DataFrame) -> bool:
    return any(re.match(r"^-?[\d.]*\d,\d+$", str(v)) for v in frame.to_numpy().ravel())


def _comma_to_point(column: pd.Series) -> pd.Series:
    numeric = column.str.match(r"^-?[\d.]*,\d+$")
    if not numeric.any():
        return column
    fixed = column.where(~numeric, column.str.replace(".", "", regex=False))
    return fixed.where(~numeric, fixed.str.replace(",", ".", regex=False))


def _read_parquet(data: bytes, name: str) -> _Table:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise BarImportError(
            [f"{name}: not a readable Parquet file ({exc.__class__.__name__}: {exc})"]
        ) from exc
    if not isinstance(frame.index, pd.RangeIndex):  # a DatetimeIndex saved by pandas
        frame = frame.reset_index()
    frame.columns = [str(c) for c in frame.columns]
    return _Table(frame, np.arange(1, len(frame) + 1), "row", True, [])


# ---------------------------------------------------------------------------------------------
# Mapping columns


def _normal(name: str) -> str:
    return str(name).strip().strip("<>").strip().lower()


def _map_columns(table: _Table, given: dict[str, str], name: str) -> tuple[dict[str, Any], str]:
    """Canonical name -> source column (`timestamp` may be a (date, time) pair), and the layout."""
    frame = table.frame
    if table.header:
        by_name = {_normal(c): c for c in frame.columns}
        mapping: dict[str, Any] = {}
        for key, value in given.items():
            column = _given_column(value, list(frame.columns), by_name)
            if column is None:
                _refuse_mapping(
                    table, name, {}, [key],
                    f"--columns {key}={value}: no such column",
                )  # fmt: skip
            mapping[key] = column
        if "date" in mapping and "time" in mapping:
            mapping["timestamp"] = (mapping.pop("date"), mapping.pop("time"))
        if "timestamp" not in mapping:
            if (
                "date" in by_name
                and "time" in by_name
                and not any(a in by_name for a in ALIASES["timestamp"][:9])
            ):
                mapping["timestamp"] = (by_name["date"], by_name["time"])
            elif _normal(frame.columns[0]) in UNNAMED_FIRST:
                mapping["timestamp"] = frame.columns[0]
        for key, aliases in ALIASES.items():
            if key not in mapping:
                found = next((by_name[a] for a in aliases if a in by_name), None)
                if found is not None:
                    mapping[key] = found
        layout = "header"
    else:
        mapping, layout = _headerless(frame, given, table, name)
    missing = [c for c in COLUMNS if c not in mapping]
    if missing:
        _refuse_mapping(table, name, mapping, missing)
    return mapping, layout


def _given_column(value: str, columns: list[Any], by_name: dict[str, Any]) -> Any:
    if value.isdigit() and 1 <= int(value) <= len(columns):
        return columns[int(value) - 1]
    return by_name.get(_normal(value))


def _headerless(
    frame: pd.DataFrame, given: dict[str, str], table: _Table, name: str
) -> tuple[dict[str, Any], str]:
    width = frame.shape[1]
    first = table.first
    if given:
        mapping: dict[str, Any] = {}
        for key, value in given.items():
            if not value.isdigit() or not 1 <= int(value) <= width:
                _refuse_mapping(
                    table, name, {}, [key],
                    f"--columns {key}={value}: a file without a header takes column numbers "
                    f"1..{width}",
                )  # fmt: skip
            mapping[key] = int(value) - 1
        if "date" in mapping and "time" in mapping:
            mapping["timestamp"] = (mapping.pop("date"), mapping.pop("time"))
        return mapping, "columns as given"
    if width == 12 and _INTEGER.match(first[0]):
        return dict(zip(COLUMNS, range(6), strict=True)), "Binance klines (no header)"
    if width == 7 and re.match(r"^\d{4}[.\-/]\d\d[.\-/]\d\d$", first[0]) and ":" in first[1]:
        mapping = {"timestamp": (0, 1), **{c: i for i, c in enumerate(COLUMNS[1:], start=2)}}
        return mapping, "MetaTrader 4 (no header)"
    if width == 6:
        return dict(zip(COLUMNS, range(6), strict=True)), "timestamp,open,high,low,close,volume"
    _refuse_mapping(
        table, name, {}, list(COLUMNS),
        f"no header row and {width} columns: not a layout CLM knows (Binance klines have 12, "
        "MetaTrader 4 has 7, plain OHLCV 6)",
    )  # fmt: skip
    raise AssertionError  # unreachable: _refuse_mapping raises


def _describe(column: Any, header: bool) -> str:
    if isinstance(column, tuple):
        return "+".join(_describe(c, header) for c in column)
    return repr(str(column)) if header else f"column {int(column) + 1}"


def _refuse_mapping(
    table: _Table, name: str, mapping: dict[str, Any], missing: list[str], reason: str = ""
) -> None:
    frame = table.frame
    if table.header:
        found = ", ".join(repr(str(c)) for c in frame.columns)
        example = "--columns " + ",".join(f"{m}=<column name>" for m in missing[:2])
    else:
        first = ", ".join(repr(v) for v in table.first[:14])
        found = f"{frame.shape[1]} unnamed columns (first row: {first})"
        example = "--columns " + ",".join(f"{m}=<column number>" for m in missing[:2])
    tried = ", ".join(f"{k}={_describe(v, table.header)}" for k, v in mapping.items()) or "nothing"
    errors = [
        *([reason] if reason else []),
        f"columns found: {found}",
        f"mapping tried: {tried}",
        f"missing: {', '.join(missing)}",
        f"fix: name them with {example} (`columns` over the API), or rename the header to "
        "timestamp,open,high,low,close,volume",
    ]
    raise BarImportError(errors, headline=f"{name}: cannot tell which column is which")


# ---------------------------------------------------------------------------------------------
# Parsing and checking


def _parse(table: _Table, *, name: str, **options: Any) -> ParsedBars:
    """Check a table, turning anything unexpected in hostile input into one clear refusal."""
    try:
        return _parse_table(table, name=name, **options)
    except BarImportError:
        raise
    except (ValueError, TypeError, OverflowError, KeyError, IndexError) as exc:
        raise BarImportError(
            [f"{name}: cannot read the bars ({exc.__class__.__name__}: {exc})"]
        ) from exc


def _parse_table(
    table: _Table,
    *,
    name: str,
    timeframe: str | None,
    tz: str,
    columns: dict[str, str] | None,
    fmt: str | None,
) -> ParsedBars:
    if timeframe is not None and timeframe not in TIMEFRAME_SECONDS:
        raise BarImportError(
            [f"unknown timeframe {timeframe!r}; one of {', '.join(TIMEFRAME_SECONDS)}"]
        )
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BarImportError(
            [f"--tz {tz!r} is not a time zone name (e.g. UTC, Europe/London)"]
        ) from exc
    if len(table.frame) == 0:
        raise BarImportError([f"{name}: the file has a header but no rows"])
    mapping, layout = _map_columns(table, columns or {}, name)
    notes = [*table.notes, f"layout: {layout}"]
    notes.append(
        "columns: " + ", ".join(f"{k}={_describe(mapping[k], table.header)}" for k in COLUMNS)
    )
    errors: list[tuple[int, str]] = []
    lines = table.lines
    ts, ts_note, bad_ts = _timestamps(table.frame, mapping["timestamp"], zone, fmt)
    notes.append(ts_note)
    for mask, reason in bad_ts:
        errors.extend((int(line), reason) for line in lines[mask])
    numeric = {}
    for column in COLUMNS[1:]:
        values = pd.to_numeric(table.frame[mapping[column]], errors="coerce")
        array = np.asarray(values, dtype=np.float64)
        for line in lines[~np.isfinite(array)]:
            errors.append((int(line), f"{column} is not a finite number"))
        numeric[column] = array
    errors.extend(_row_checks(numeric, lines))
    order_errors, reverse = _order_checks(ts, lines)
    errors.extend(order_errors)
    if errors:
        errors.sort()
        unit = table.unit
        bad = len({line for line, _ in errors})
        raise BarImportError(
            [f"{unit} {line}: {reason}" for line, reason in errors],
            headline=f"{name}: {bad} bad {unit}(s)",
            bad_rows=bad,
        )
    clean = pd.DataFrame({"timestamp": ts, **numeric})
    if reverse:
        clean = clean.iloc[::-1].reset_index(drop=True)
        notes.append("rows were newest first: reversed")
    if timeframe is not None:
        notes.append(_spacing_check(clean["timestamp"], timeframe, name))
    return ParsedBars(clean, notes)


def _row_checks(numeric: dict[str, np.ndarray], lines: np.ndarray) -> Iterable[tuple[int, str]]:
    o, h, lo, c, v = (numeric[k] for k in COLUMNS[1:])
    with np.errstate(invalid="ignore"):
        checks = [
            ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "prices must be positive"),
            (h < lo, "high is below low"),
            ((h >= lo) & (h < np.maximum(o, c)), "high is below open or close"),
            ((h >= lo) & (lo > np.minimum(o, c)), "low is above open or close"),
            (v < 0, "volume is negative"),
        ]
    for mask, reason in checks:
        for line in lines[mask]:
            yield int(line), reason


def _order_checks(ts: pd.Series, lines: np.ndarray) -> tuple[list[tuple[int, str]], bool]:
    """Duplicates and rows out of order by line; a file wholly newest-first is simply reversed."""
    valid = ts.notna().to_numpy()
    errors = [
        (int(line), "duplicate timestamp") for line in lines[ts.duplicated().to_numpy() & valid]
    ]
    epoch = epoch_seconds(ts[valid])
    if len(epoch) < 2 or errors:
        return errors, False
    steps = np.diff(epoch)
    if (steps < 0).all():
        return errors, True
    running = np.maximum.accumulate(epoch)
    behind = np.flatnonzero(epoch[1:] < running[:-1]) + 1
    valid_lines = lines[valid]
    for i in behind:
        errors.append(
            (int(valid_lines[i]), "earlier than a row above it (rows must be in time order)")
        )
    return errors, False


def _spacing_check(ts: pd.Series, timeframe: str, name: str) -> str:
    """The median spacing must be the timeframe; gaps (weekends, sessions) are fine, but bars
    closer than half a timeframe are another timeframe mixed in."""
    expected = TIMEFRAME_SECONDS[timeframe]
    if len(ts) < 2:
        return f"spacing: one bar, not checked against {timeframe}"
    steps = np.diff(epoch_seconds(ts))
    median = float(np.median(steps))
    if median != expected:
        found = _duration(median)
        guess = next((k for k, s in TIMEFRAME_SECONDS.items() if s == median), None)
        hint = f"; import it with --timeframe {guess}" if guess else ""
        raise BarImportError(
            [
                f"{name}: the bars are {found} apart (median spacing) "
                f"but --timeframe is {timeframe}{hint}"
            ]
        )
    return f"spacing: {timeframe} (median), {int((steps > expected).sum())} gaps"


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as Unix seconds, whatever resolution pandas chose for them."""
    return ts.dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _timestamps(
    frame: pd.DataFrame, column: Any, zone: ZoneInfo, fmt: str | None
) -> tuple[pd.Series, str, list[tuple[np.ndarray, str]]]:
    """UTC timestamps (NaT where unreadable), a note saying how they were read, the bad rows."""
    if isinstance(column, tuple):
        date, time = (frame[c].astype(str).str.strip() for c in column)
        values = date + " " + time
    else:
        values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.Series(pd.DatetimeIndex(values))
        if ts.dt.tz is None:
            ts, note = _localize(ts, zone)
        else:
            ts, note = ts.dt.tz_convert("UTC"), "timestamps: typed, with their time zone"
        return ts, note, _unreadable(ts)
    if pd.api.types.is_numeric_dtype(values):
        return _epoch(pd.to_numeric(values, errors="coerce"))
    text = values.astype(str).str.strip()
    numeric = text.str.match(r"^-?\d+(\.\d+)?$")
    if numeric.mean() > 0.5:
        return _epoch(pd.to_numeric(text.where(numeric), errors="coerce"))
    if fmt:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        return _finish(parsed, zone, f"format {fmt}")
    aware = text.str.contains(_OFFSET).to_numpy()
    if aware.any():
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        note = "timestamps: ISO 8601 with offsets, converted to UTC"
        bad = _unreadable(parsed)
        if not aware.all():
            bad.append((~aware & parsed.notna().to_numpy(), "timestamp has no offset, others do"))
        return parsed, note, bad
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    if parsed.notna().all():
        return _finish(parsed, zone, "ISO 8601")
    best, best_format = parsed, "ISO 8601"
    for candidate in DATE_FORMATS:
        attempt = pd.to_datetime(text, format=candidate, errors="coerce")
        if attempt.notna().sum() > best.notna().sum():
            best, best_format = attempt, candidate
        if attempt.notna().all():
            break
    if not best.notna().all():
        for first, second in AMBIGUOUS_FORMATS:
            one = pd.to_datetime(text, format=first, errors="coerce")
            two = pd.to_datetime(text, format=second, errors="coerce")
            if one.notna().all() and two.notna().all() and not one.equals(two):
                raise BarImportError(
                    [
                        f"dates such as {text.iloc[0]!r} read both as month/day and day/month: "
                        f"pass --date-format {first!r} or {second!r}"
                    ]
                )
            for attempt, candidate in ((one, first), (two, second)):
                if attempt.notna().sum() > best.notna().sum():
                    best, best_format = attempt, candidate
    return _finish(best, zone, f"format {best_format}")


def _unreadable(ts: pd.Series) -> list[tuple[np.ndarray, str]]:
    return [(ts.isna().to_numpy(), "timestamp is not a date/time")]


def _finish(
    parsed: pd.Series, zone: ZoneInfo, how: str
) -> tuple[pd.Series, str, list[tuple[np.ndarray, str]]]:
    ts, note = _localize(parsed, zone)
    return ts, f"timestamps: {how}; {note.removeprefix('timestamps: ')}", _unreadable(ts)


def _localize(ts: pd.Series, zone: ZoneInfo) -> tuple[pd.Series, str]:
    name = str(zone.key)
    if name == "UTC":
        return ts.dt.tz_localize("UTC"), "timestamps: naive, read as UTC (pass --tz to change)"
    try:
        local = ts.dt.tz_localize(name, ambiguous="infer", nonexistent="NaT")
    except Exception:  # an ambiguous hour that cannot be inferred: leave it to the line report
        local = ts.dt.tz_localize(name, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC"), f"timestamps: naive, read in {name}, converted to UTC"


def _epoch(values: pd.Series) -> tuple[pd.Series, str, list[tuple[np.ndarray, str]]]:
    finite = values.dropna().to_numpy(dtype=np.float64)
    magnitude = float(np.median(np.abs(finite))) if len(finite) else 0.0
    unit, word = next((u, w) for limit, u, w in EPOCH_UNITS if magnitude < limit)
    ts = pd.to_datetime(values, unit=unit, utc=True, errors="coerce")
    return ts, f"timestamps: epoch {word} (by magnitude), UTC", _unreadable(ts)


def describe(parsed: ParsedBars) -> str:
    """The notes as one line for a command's output."""
    return "; ".join(parsed.notes)
