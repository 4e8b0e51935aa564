"""Applying the schema: the Alembic revisions in `vidpipe/db/migrations/versions/`.

The revisions are the one source of the records schema. `upgrade` brings a database to the
newest one (every process at start, `vidpipe replay records`, the tests); a database made by
vidpipe 0.1's `create_all` has no version yet and is adopted in place by the baseline.
`render_sql` writes each revision as PostgreSQL SQL: what `supabase/migrations/` ships for
`supabase db push` (tests/integration/test_migrations.py keeps the two identical).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "MIGRATIONS_DIR",
    "Revision",
    "current_revision",
    "head_revision",
    "render_sql",
    "revisions",
    "supabase_file_name",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant: the key of the transaction-scoped advisory lock that serialises migrators.
_LOCK_KEY = 0x76696470


@dataclass(frozen=True)
class Revision:
    id: str
    doc: str


def _config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def revisions() -> list[Revision]:
    """Every revision, oldest first."""
    scripts = _scripts()
    found = [
        Revision(script.revision, script.doc) for script in scripts.walk_revisions("base", "heads")
    ]
    return list(reversed(found))


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def _upgrade_sync(connection: Any) -> None:
    if connection.dialect.name == "postgresql":
        # Transaction-scoped, so it is safe through a transaction-mode pooler: processes starting
        # together migrate one after the other, and the later ones find nothing left to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    command.upgrade(_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision, in one transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_sync)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Any) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def render_sql(revision: str, dialect: str = "postgresql") -> str:
    """The SQL of one revision's upgrade for `dialect`, without Alembic's version table."""
    script = _scripts().get_revision(revision)
    assert script is not None
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name=dialect,
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    with Operations.context(context):
        script.module.upgrade()
    header = (
        f"-- vidpipe migration {revision}, rendered from "
        f"vidpipe/db/migrations/versions by vidpipe.db.migrate.render_sql: do not edit.\n\n"
    )
    # Trailing blanks are SQLAlchemy's DDL layout, not content: strip them for a clean file.
    body = "\n".join(line.rstrip() for line in buffer.getvalue().strip().splitlines())
    return header + body + "\n"


def supabase_file_name(index: int, revision: str) -> str:
    """`supabase/migrations/` wants `<timestamp>_<name>.sql`, applied in name order."""
    return f"2026120100{index:04d}_vidpipe_{revision}.sql"


def write_supabase_migrations(folder: Path) -> list[Path]:
    """(Re)write every revision's SQL into `folder`; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, rev in enumerate(revisions(), start=1):
        path = folder / supabase_file_name(index, rev.id)
        path.write_text(render_sql(rev.id))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_supabase_migrations(Path("supabase/migrations")):
        print(written_path)
