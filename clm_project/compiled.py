"""Read querysets compiled to SQL once per process and shape, then run with each call's values.

Compiling a queryset (joins, select list, ordering, converters) costs more CPU than the database
spends answering it: about 1 ms for a version with its model and latest evaluation joined, against
0.3 ms to run it. The hot reads of the API (token authentication, the production version, a page
of versions) come in a few shapes, so each shape is compiled once, with placeholder strings where
the call's values go, and each call puts its values in the placeholders' places among the SQL
parameters and builds model instances as QuerySet iteration does (select_related included).

Values are strings or integers, and a shape is used only if every placeholder comes through
compilation unchanged, as parameters of its own: a lookup that transforms its value (`upper()`,
`LIKE` wrapping) makes the shape fall back to the ORM, which then runs the queryset as it always
did. Nothing about the rows is cached, only the SQL. A locking shape (`select_for_update()`) runs
only inside a transaction, as the ORM requires.

On PostgreSQL each shape is also a prepared statement, so the database parses and plans it once
per connection (`prepared_cursor`). For that plan to be reused, the statement carries as
parameters only what varies from call to call: the shape's constants (a status, the `1` of an
EXISTS) and its LIMIT and OFFSET are written into the SQL as literals (`_Template`). PostgreSQL
plans a statement for each call's values ("custom plans") until a plan without them is estimated
to be as good; a constant it cannot see, or a LIMIT of unknown size (estimated as a tenth of the
table), kept it planning on every call, which cost more than running the statement (0.4-0.6 ms
against 0.1-0.4 ms for a page or a promotion's locking read).

`CompiledQuery.raw_rows` hands out the rows without building instances, for writers that turn
them into output directly (ReadModelSerializer.write_rows).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connections, models
from django.db.models.query import ModelIterable, get_related_populators
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=models.Model)

_PLACEHOLDER = "\x00Clm-placeholder:{}:{}\x00"
# Within every integer field's range (a value out of range compiles to an empty result).
_INT_PLACEHOLDER = 2_147_480_311


def _placeholder(kind: type, position: int, variant: int) -> str | int:
    if kind is int:
        return _INT_PLACEHOLDER + 100 * variant + position
    return _PLACEHOLDER.format(variant, position)


_PREPARING: dict[str, Any] = {}


def _postgresql() -> dict[str, Any]:
    """What a preparing cursor needs of Django's psycopg 3 backend, imported on first use."""
    if not _PREPARING:
        from django.db.backends.postgresql import base

        class PreparingCursor(base.ServerBindingCursor):
            """Django's server-binding cursor, asking for its statements to be prepared (or,
            with `prepare` False, not to be)."""

            prepare = True

            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                return super().execute(  # type: ignore[misc]
                    query, params, prepare=self.prepare, **kwargs
                )

        class PreparingDebugWrapper(base.CursorDebugWrapper):
            """Where Django logs queries: the SQL with its values in place, as Django logs its
            own (its text for a prepared statement would be empty)."""

            @contextmanager
            def debug_sql(
                self,
                sql: Any = None,
                params: Any = None,
                use_last_executed_query: bool = False,
                many: bool = False,
            ) -> Iterator[None]:
                if use_last_executed_query and not many:
                    try:
                        sql = self.db.ops.compose_sql(sql, params)
                        use_last_executed_query = False
                    except Exception:  # logging never fails the query
                        pass
                with super().debug_sql(sql, params, use_last_executed_query, many):
                    yield

        import psycopg
        from psycopg.pq import Format

        oid = base.TIMESTAMPTZ_OID
        compiled = psycopg.adapters.get_loader(oid, Format.TEXT)
        # psycopg's C loader of timestamptz text (psycopg[binary]), where Django uses the Python
        # one: a tenth of the cost, and the same aware datetime in the session's time zone.
        native = compiled if compiled.__module__.startswith("psycopg_binary") else None
        _PREPARING.update(
            cursor=PreparingCursor,
            debug=PreparingDebugWrapper,
            base=base,
            native_times=native,
            text=Format.TEXT,
        )
    return _PREPARING


def prepared_cursor(connection: Any, *, prepare: bool = True) -> Any:
    """A cursor of `connection` as `connection.cursor()` gives it (errors wrapped, queries
    logged where Django logs them), whose statements PostgreSQL prepares unless `prepare` is
    False: parsed and planned once per connection, not per call
    (settings.CLM_DB_PREPARED_STATEMENTS; off behind a connection pooler that cannot keep
    them)."""
    if connection.vendor != "postgresql" or not settings.CLM_DB_PREPARED_STATEMENTS:
        return connection.cursor()
    pg = _postgresql()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = connection.connection
        if raw.prepare_threshold is None:
            # Django turns preparing off (None), which refuses even asked-for preparation; a
            # threshold never reached prepares only what is asked for (its cursors never ask).
            raw.prepare_threshold = 2**31 - 1
        cursor = pg["cursor"](raw)
        cursor.prepare = prepare
        # As DatabaseWrapper.create_cursor: timestamptz values in the connection's time zone,
        # UTC (which the session is set to) read by the C loader.
        base = pg["base"]
        if (
            pg["native_times"] is not None
            and connection.timezone is UTC
            and (connection.timezone_name == "UTC")
        ):
            cursor.adapters.register_loader(base.TIMESTAMPTZ_OID, pg["native_times"])
        else:
            loader = raw.adapters.get_loader(base.TIMESTAMPTZ_OID, pg["text"])
            if connection.timezone != loader.timezone:
                base.register_tzloader(connection.timezone, cursor)
        wrapped = connection._prepare_cursor(cursor)
        if isinstance(wrapped, base.CursorDebugWrapper):
            return pg["debug"](cursor, connection)
        return wrapped


# Text constants written into the SQL as they are: nothing that needs escaping or could be read
# as a placeholder (`%`), a comment (`--`) or an escape (a backslash).
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_.:+ -]*\Z")
# The distinct texts of one shape (its page sizes and offsets) that are prepared per process; a
# shape's later texts are planned on each call, as any statement that is not prepared.
_PREPARED_TEXTS = 8


def _literal(value: Any) -> str | None:
    """`value` as an SQL literal, for the constants and numbers _Template writes into the text;
    None for a value that stays a parameter (booleans, dates, JSON, text beyond _PLAIN_TEXT)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = int(value)
        return str(number) if number >= 0 else f"({number})"
    if isinstance(value, str):  # a choices enum too: its text, as the driver would send it
        text = str.__str__(value)
        if "--" not in text and _PLAIN_TEXT.match(text):
            return f"'{text}'"
    return None


def _pieces(sql: str) -> list[str]:
    """`sql` split at its `%s` placeholders (a percent sign of the SQL itself is `%%`)."""
    pieces, start, at = [], 0, 0
    while (at := sql.find("%", at)) != -1:
        if sql.startswith("%s", at):
            pieces.append(sql[start:at])
            start = at = at + 2
        else:
            at += 2 if sql.startswith("%%", at) else 1
    pieces.append(sql[start:])
    return pieces


class _Template:
    """A shape's SQL with its constants written in as literals and the values named `inline`
    (page sizes and offsets) written in per call; the other values stay parameters.

    `slots[k]` lists where value k goes among `params` (empty for an inline value)."""

    def __init__(
        self, sql: str, params: list[Any], slots: list[list[int]], inline: list[bool]
    ) -> None:
        pieces = _pieces(sql)
        role: dict[int, int] = {i: k for k, found in enumerate(slots) for i in found}
        self.parts: list[str | int] = [sql]
        self.params, self.slots = list(params), [list(found) for found in slots]
        if len(pieces) != len(params) + 1:  # not Django's placeholder style: all stay parameters
            return
        parts: list[str | int] = [pieces[0]]
        kept: list[Any] = []
        new_slots: list[list[int]] = [[] for _ in slots]
        for i, param in enumerate(params):
            k = role.get(i)
            literal = _literal(param) if k is None else None
            if k is not None and inline[k]:
                parts.append(k)  # written in per call
            elif literal is not None:
                parts.append(literal)
            else:
                if k is not None:
                    new_slots[k].append(len(kept))
                kept.append(param)
                parts.append("%s")
            parts.append(pieces[i + 1])
        merged: list[str | int] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            else:
                merged.append(part)
        self.parts, self.params, self.slots = merged, kept, new_slots

    def sql(self, values: list[Any]) -> str:
        if len(self.parts) == 1:
            return self.parts[0]  # type: ignore[return-value]
        return "".join(
            part if isinstance(part, str) else str(_literal(int(values[part])))
            for part in self.parts
        )


@dataclass(frozen=True)
class Rows:
    """A compiled shape's rows as the database returned them, for writing them out without model
    instances: `columns` maps an attribute path ("status"; "model", "model_id" through
    select_related) to its position in each row. JSON columns stay JSON text, in `json`; every
    other column is converted as the ORM converts it. `layout` is the same object for every call
    of one shape, to key what is derived from the columns."""

    columns: Mapping[tuple[str, ...], int]
    json: frozenset[int]
    rows: list[list[Any]]
    layout: object


def _columns(
    klass_info: dict[str, Any], select: list[Any], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], int] | None:
    """Attribute path -> select position for a model and what select_related joined to it; None
    if a reverse relation is joined (its path would not be an attribute of the row's model)."""
    out: dict[tuple[str, ...], int] = {}
    for i in klass_info["select_fields"]:
        target = select[i][0].target
        out[(*prefix, target.attname)] = i
        if not target.is_relation:
            out[(*prefix, target.name)] = i
    for related in klass_info.get("related_klass_infos", []):
        if related["reverse"]:
            return None
        nested = _columns(related, select, (*prefix, related["field"].name))
        if nested is None:
            return None
        out.update(nested)
    return out


class _Plan:
    """One shape on one database: the SQL, where the values go, and how rows become instances."""

    def __init__(
        self, qs: models.QuerySet[Any], slots: list[list[int]], inline: list[bool]
    ) -> None:
        compiler = qs.query.get_compiler(using=qs.db)
        sql, params = compiler.as_sql()
        self.template = _Template(sql, list(params), slots, inline)
        self.params = self.template.params
        # The backend may wrap a value in a subclass of its type (psycopg's Int4 on PostgreSQL):
        # each call's value is wrapped the same way.
        self.slots = [[(i, type(self.params[i])) for i in found] for found in self.template.slots]
        self._prepared: set[str] = set()
        self.locks = bool(qs.query.select_for_update)
        select, klass_info = compiler.select, compiler.klass_info
        self.model = klass_info["model"]
        fields = klass_info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        self.init_list = [column[0].target.attname for column in select[self.start : self.end]]
        # Django 5.2's signature (the stubs describe a later one with a fetch mode).
        self.populators = get_related_populators(klass_info, select, qs.db)  # type: ignore[call-arg]
        # Annotations land on the instance as attributes, as QuerySet iteration sets them.
        self.annotations = list(compiler.annotation_col_map.items())
        self.converters = list(
            compiler.get_converters([column[0] for column in select[: compiler.col_count]]).items()
        )
        self.db = qs.db
        self.columns = _columns(klass_info, select)
        self.json = frozenset(
            i
            for i, column in enumerate(select[: compiler.col_count])
            if isinstance(getattr(column[0], "target", None), models.JSONField)
        )
        # As `converters`, without JSONField's decoding: raw rows keep JSON as text.
        self.raw_converters = [item for item in self.converters if item[0] not in self.json]

    def execute(self, values: list[Any], limit: int | None, offset: int) -> list[Any]:
        """The rows for `values` (from `offset`, at most `limit` of them if a limit is given), as
        the database returned them."""
        sql = self.template.sql(values)
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        params = list(self.params)
        for found, value in zip(self.slots, values, strict=True):
            for i, wrap in found:
                params[i] = value if type(value) is wrap else wrap(value)
        connection = connections[self.db]
        if self.locks and connection.get_autocommit():
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        try:
            with prepared_cursor(connection, prepare=self._prepare(sql)) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        except OverflowError:
            # A value beyond its column type's range cannot be bound as that type; as SQL text
            # it compares as a number and matches nothing. Raised before anything is sent.
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()

    def _prepare(self, sql: str) -> bool:
        """Whether to prepare this text of the shape: the first _PREPARED_TEXTS a process runs
        (the page sizes and offsets a polling client repeats), so that the texts of a client
        paging through every offset never crowd the connection's prepared statements."""
        if sql in self._prepared:
            return True
        if len(self._prepared) < _PREPARED_TEXTS:
            self._prepared.add(sql)
            return True
        return False

    def converted(
        self, values: list[Any], limit: int | None, offset: int, converters: list[Any]
    ) -> list[list[Any]]:
        """`execute`'s rows as lists, with `converters` (the ORM's, or `raw_converters`) applied."""
        connection = connections[self.db]
        out = []
        for found in self.execute(values, limit, offset):
            row = list(found)
            for pos, (convs, expression) in converters:
                value = row[pos]
                for convert in convs:
                    value = convert(value, expression, connection)
                row[pos] = value
            out.append(row)
        return out

    def fetch(self, values: list[Any], limit: int | None, offset: int) -> list[Any]:
        """The rows for `values` as model instances, as QuerySet iteration builds them."""
        out = []
        for row in self.converted(values, limit, offset, self.converters):
            obj = self.model.from_db(self.db, self.init_list, row[self.start : self.end])
            for populator in self.populators:
                populator.populate(row, obj)
            for name, pos in self.annotations:
                setattr(obj, name, row[pos])
            out.append(obj)
        return out


class CompiledQuery(Generic[M]):
    """A queryset shape `build(**values)`, compiled once per database alias and process;
    `kinds` names each value and its type (str or int). `build` returns an unsliced queryset of
    model instances, ordered where more than one row can match; a locking one (select_for_update)
    must match at most one row. The SQL must depend on the values only through its parameters:
    `build` never branches on them (a caller keys shapes by which filters are given instead).
    The values named in `inline` (integers: a page's size and offset inside the shape) are written
    into the SQL as literals, as LIMIT and OFFSET are, so that PostgreSQL can plan for them."""

    def __init__(
        self,
        build: Callable[..., models.QuerySet[M]],
        inline: tuple[str, ...] = (),
        **kinds: type,
    ) -> None:
        if any(kind not in (str, int) for kind in kinds.values()):
            raise TypeError("values are str or int")
        if any(kinds.get(name) is not int for name in inline):
            raise TypeError("inline values are integers of the shape (a page's size, offset)")
        self.build = build
        self.kinds = kinds
        self.inline = [name in inline for name in kinds]
        self._plans: dict[str, _Plan | None] = {}
        self._lock = threading.Lock()

    def rows(
        self, *, using: str | None = None, limit: int | None = None, offset: int = 0, **values: Any
    ) -> list[M]:
        """The rows for `values` (from `offset`, at most `limit` of them)."""
        plan = self._plan_for(using, values)
        if plan is None or (plan.locks and (limit is not None or offset)) or (offset and not limit):
            return self._orm(using, values, limit, offset)
        return plan.fetch([values[name] for name in self.kinds], limit, offset)

    def raw_rows(
        self, *, using: str | None = None, limit: int | None = None, offset: int = 0, **values: Any
    ) -> Rows | None:
        """As `rows`, without building instances (see Rows); None when the shape runs through the
        ORM or its joins cannot be named by attribute paths."""
        plan = self._plan_for(using, values)
        if plan is None or plan.columns is None or plan.locks or (offset and not limit):
            return None
        ordered = [values[name] for name in self.kinds]
        rows = plan.converted(ordered, limit, offset, plan.raw_converters)
        return Rows(columns=plan.columns, json=plan.json, rows=rows, layout=plan)

    def first(self, *, using: str | None = None, **values: Any) -> M | None:
        """The first row for `values`, in the queryset's order, or None."""
        plan = self._plan_for(using, values)
        if plan is not None and plan.locks:
            rows = self.rows(using=using, **values)
        else:
            rows = self.rows(using=using, limit=1, **values)
        return rows[0] if rows else None

    def _plan_for(self, using: str | None, values: dict[str, Any]) -> _Plan | None:
        if values.keys() != self.kinds.keys() or any(
            type(values[name]) is not kind for name, kind in self.kinds.items()
        ):
            return None
        key = using or "default"
        if key not in self._plans:
            with self._lock:
                if key not in self._plans:
                    self._plans[key] = self._compile(using)
        return self._plans[key]

    def _compile(self, using: str | None) -> _Plan | None:
        """The plan, or None when the shape cannot be compiled. It is compiled with two sets of
        placeholders, which must give the same SQL with the placeholders in the same places:
        otherwise a value shapes the SQL itself, or a constant of the query equals one."""
        found = [self._placeholders_in(using, variant) for variant in (0, 1)]
        if found[0] is None or found[1] is None or found[0][1:] != found[1][1:]:
            return None
        qs, _, slots = found[0]
        return _Plan(qs, slots, self.inline)

    def _placeholders_in(
        self, using: str | None, variant: int
    ) -> tuple[models.QuerySet[M], str, list[list[int]]] | None:
        """The queryset built with placeholders, its SQL, and where each placeholder is among
        its parameters; None if the ORM turns it into something that cannot be compiled here."""
        placeholders = [
            _placeholder(kind, i, variant) for i, kind in enumerate(self.kinds.values())
        ]
        qs = self.build(**dict(zip(self.kinds, placeholders, strict=True)))
        if using:
            qs = qs.using(using)
        query = qs.query
        if (
            query.is_sliced
            or qs._iterable_class is not ModelIterable
            or qs._prefetch_related_lookups  # type: ignore[attr-defined]
            or qs._known_related_objects  # type: ignore[attr-defined]
            or query.extra_select
        ):
            return None
        try:
            sql, params = query.get_compiler(using=qs.db).as_sql()
        except (EmptyResultSet, FullResultSet):
            return None
        slots = []
        for placeholder in placeholders:
            where = [
                i
                for i, param in enumerate(params)
                if isinstance(param, type(placeholder)) and param == placeholder
            ]
            if not where:
                return None
            slots.append(where)
        return qs, sql, slots

    def _orm(
        self, using: str | None, values: dict[str, Any], limit: int | None, offset: int
    ) -> list[M]:
        qs = self.build(**values)
        if using:
            qs = qs.using(using)
        return list(qs[offset : None if limit is None else offset + limit])
