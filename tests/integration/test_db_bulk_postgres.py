"""`vidpipe.db.bulk` on a real PostgreSQL: one JSON document per statement, stored as
SQLAlchemy's `insert` and `update` would store the same rows (tests/contracts/bulk_contract.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.contracts import bulk_contract
from vidpipe.db.tables import open_engine


@pytest.fixture
async def engine(test_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(test_database_url)
    yield engine
    await engine.dispose()


async def test_inserts_store_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    await bulk_contract.inserts_store_what_sqlalchemy_stores(engine)


async def test_updates_store_what_sqlalchemy_stores(engine: AsyncEngine) -> None:
    await bulk_contract.updates_store_what_sqlalchemy_stores(engine)


async def test_a_page_break_loses_no_row(engine: AsyncEngine) -> None:
    await bulk_contract.a_page_break_loses_no_row(engine)
