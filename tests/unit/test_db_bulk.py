"""`vidpipe.db.bulk` on SQLite: driver SQL that stores what SQLAlchemy's statements would.

The scenarios are tests/contracts/bulk_contract.py (the same on PostgreSQL, in
tests/integration/test_db_bulk_postgres.py), here on a real SQLite file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.contracts import bulk_contract
from tests.contracts.bulk_contract import CET
from vidpipe.db.bulk import sqlite_datetime
from vidpipe.db.tables import open_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    yield engine
    await engine.dispose()


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 8, 0, 14, 22, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(999, 1, 1, tzinfo=CET),
        datetime(2026, 1, 1, 5, 6, 7),
    ],
)
def test_datetimes_are_the_text_sqlalchemy_stores(value: datetime) -> None:
    dialect = sqlite.dialect()
    process = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert sqlite_datetime(value) == process(value)


async def test_inserts_store_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    await bulk_contract.inserts_store_what_sqlalchemy_stores(engine)


async def test_updates_store_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    await bulk_contract.updates_store_what_sqlalchemy_stores(engine)


async def test_a_page_break_loses_no_row(engine: AsyncEngine) -> None:
    await bulk_contract.a_page_break_loses_no_row(engine)
