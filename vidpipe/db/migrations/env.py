"""Alembic's entry point: runs the revisions on the connection `vidpipe.db.migrate` passes in.

Only the online mode is used: `vidpipe.db.migrate.render_sql` renders the SQL for Supabase
itself, revision by revision, without Alembic's version table.
"""

from __future__ import annotations

from alembic import context

if context.is_offline_mode():
    raise RuntimeError("render SQL with vidpipe.db.migrate.render_sql, not alembic --sql")

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
