"""Many rows in one statement: insert the new ones, update some columns, on SQLite and PostgreSQL.

The recorder writes a consumer batch (up to 2,000 events) in one transaction. Written through
SQLAlchemy's usual per-row parameters, the bookkeeping cost more than the databases' own work
(py-spy profiles of the recorder alone, docs/performance.md):

- SQLite: SQLAlchemy's execution context keeps one dictionary entry and one lookup per
  placeholder of a multi-row statement. Here the statements are driver SQL, their values
  converted by each column's own bind processor, looked up once per statement (`_SqliteValues`).
- PostgreSQL: psycopg parses a statement's placeholders again on every run once it is longer
  than 4 KiB, and an `executemany` is one round of the protocol per row. Here the rows travel as
  one JSON document, one parameter, read back with `json_to_recordset`.

Both functions write exactly what SQLAlchemy's `insert` / `update` would: the tests compare the
stored values (tests/unit/test_db_bulk.py, and the records contract on both backends).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Table, Text, bindparam, cast, column, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.db.tables import JSONText, dump_json

__all__ = ["insert_new", "sqlite_datetime", "update_rows"]

#: Rows per SQLite statement: 1,000 rows of the widest insert stay far under SQLite's 32,766
#: placeholders, whatever VIDPIPE_RECORDS_BATCH_MAX is.
_SQLITE_PAGE = 1000


async def insert_new(
    conn: AsyncConnection, key: Column[Any], rows: list[dict[str, Any]]
) -> set[Any]:
    """Insert the `rows` whose `key` is not in the table yet; the keys of those that went in.

    Every row names the same columns; a column left out gets its scalar default, as with
    SQLAlchemy's `insert`."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        return await _insert_new_postgresql(conn, key, rows)
    return await _insert_new_sqlite(conn, key, rows)


async def update_rows(
    conn: AsyncConnection, key: Column[Any], columns: Sequence[str], rows: Iterable[dict[str, Any]]
) -> None:
    """Set `columns` of each row whose `key` equals the row's; one statement for all of them."""
    rows = list(rows)
    if not rows or not columns:
        return
    if conn.dialect.name == "postgresql":
        await _update_rows_postgresql(conn, key, columns, rows)
    else:
        await _update_rows_sqlite(conn, key, columns, rows)


# -- SQLite: driver SQL ------------------------------------------------------------------------


async def _insert_new_sqlite(
    conn: AsyncConnection, key: Column[Any], rows: list[dict[str, Any]]
) -> set[Any]:
    table = key.table
    quote = conn.dialect.identifier_preparer.quote
    convert = _SqliteValues.of(table, list(rows[0]), conn.dialect)
    # Identifiers from the table's definition (`_SqliteValues.of` refuses any other), quoted;
    # every value is a bound parameter.
    listed = ", ".join(map(quote, convert.names))
    head = f"INSERT INTO {quote(table.name)} ({listed}) VALUES "  # noqa: S608
    tail = f" ON CONFLICT ({quote(key.name)}) DO NOTHING RETURNING {quote(key.name)}"
    marks = "(" + ", ".join("?" * len(convert.names)) + ")"
    inserted: set[Any] = set()
    for start in range(0, len(rows), _SQLITE_PAGE):
        page = rows[start : start + _SQLITE_PAGE]
        sql = head + ", ".join([marks] * len(page)) + tail
        result = await conn.exec_driver_sql(sql, tuple(convert.flat(page)))
        inserted.update(row[0] for row in result)
    return inserted


async def _update_rows_sqlite(
    conn: AsyncConnection, key: Column[Any], columns: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    table = key.table
    quote = conn.dialect.identifier_preparer.quote
    convert = _SqliteValues.of(table, [*columns, key.name], conn.dialect, defaults=False)
    assignments = ", ".join(f"{quote(name)} = ?" for name in columns)
    # Identifiers from the table's definition, quoted; every value is a bound parameter.
    sql = f"UPDATE {quote(table.name)} SET {assignments} WHERE {quote(key.name)} = ?"  # noqa: S608
    width = len(columns) + 1
    values = tuple(convert.flat(rows))
    await conn.exec_driver_sql(sql, [values[i : i + width] for i in range(0, len(values), width)])


@dataclass(frozen=True)
class _SqliteValues:
    """The driver values of rows for some columns of a table, as SQLAlchemy would bind them:
    each column's bind processor (SQLAlchemy's own; a faster equivalent for datetimes), looked
    up once per statement, not per value; and, for an insert, the scalar default of each column
    the rows leave out (`projects.placeholder`'s False), which SQLAlchemy adds in Python."""

    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    defaults: dict[str, Any]

    @classmethod
    def of(
        cls, table: Table, given: Sequence[str], dialect: Any, *, defaults: bool = True
    ) -> _SqliteValues:
        filled: dict[str, Any] = {}
        for col in table.columns if defaults else ():
            if col.name in given or col.default is None:
                continue
            if not col.default.is_scalar:
                raise ValueError(f"{table.name}.{col.name}: only scalar defaults are supported")
            filled[col.name] = col.default.arg  # type: ignore[attr-defined]
        names = (*(table.c[name].name for name in given), *filled)
        processors: list[Callable[[Any], Any] | None] = []
        for name in names:
            kind = table.c[name].type
            if isinstance(kind, DateTime):
                processors.append(_sqlite_datetime_or_null)
            else:
                processors.append(kind.dialect_impl(dialect).bind_processor(dialect))
        return cls(names, tuple(processors), filled)

    def flat(self, rows: Iterable[dict[str, Any]]) -> Iterable[Any]:
        pairs = tuple(zip(self.names, self.processors, strict=True))
        defaults = self.defaults
        for row in rows:
            for name, process in pairs:
                value = row[name] if name in row else defaults[name]
                # None goes through the processor too: a JSON column stores it as `null`.
                yield value if process is None else process(value)


def sqlite_datetime(value: datetime) -> str:
    """The text SQLAlchemy's SQLite `DateTime` stores for `value` (its fields, zone ignored):
    `2026-12-08 00:14:22.123456`. Its own processor formats through a dictionary of fields.
    The first 26 characters of the ISO form are those fields, whatever the zone that follows."""
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_datetime_or_null(value: datetime | None) -> str | None:
    return None if value is None else sqlite_datetime(value)


# -- PostgreSQL: one JSON document -------------------------------------------------------------


async def _insert_new_postgresql(
    conn: AsyncConnection, key: Column[Any], rows: list[dict[str, Any]]
) -> set[Any]:
    table = key.table
    names = list(rows[0])
    _source, values = _recordset(table, names, rows)
    statement = (
        postgresql_insert(table)
        .from_select(names, select(*(values[name] for name in names)))
        .on_conflict_do_nothing(index_elements=[key.name])
        .returning(key)
    )
    return {row[0] for row in await conn.execute(statement)}


async def _update_rows_postgresql(
    conn: AsyncConnection, key: Column[Any], columns: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    table = key.table
    source, values = _recordset(table, [key.name, *columns], rows)
    await conn.execute(
        table.update()
        .where(key == source.c[key.name])
        .values({name: values[name] for name in columns})
    )


def _recordset(
    table: Table, names: Sequence[str], rows: list[dict[str, Any]]
) -> tuple[Any, dict[str, Any]]:
    """`json_to_recordset` of `rows` (their `names` columns) as one JSON document, and the
    expression of each column's value in the table's type.

    A JSON column travels as text (its document as it is: a `JSONText` is not parsed again) and
    is cast back; a datetime travels as ISO 8601 with its offset."""
    json_columns = {name for name in names if isinstance(table.c[name].type, JSON)}
    times = [name for name in names if isinstance(table.c[name].type, DateTime)]
    texts = list(json_columns)
    document = []
    for row in rows:
        item = {name: row[name] for name in names}
        for name in times:
            if (when := item[name]) is not None:
                item[name] = when.isoformat()
        for name in texts:  # None too: SQLAlchemy's JSON type stores it as `null`
            doc = item[name]
            item[name] = doc.text if isinstance(doc, JSONText) else dump_json(doc)
        document.append(item)
    source = (
        func.json_to_recordset(bindparam("rows", JSONText(json.dumps(document)), type_=JSON))
        .table_valued(*(column(n, Text if n in json_columns else table.c[n].type) for n in names))
        .render_derived(with_types=True)
    )
    values = {
        n: cast(source.c[n], table.c[n].type) if n in json_columns else source.c[n] for n in names
    }
    return source, values
