"""The records schema as Alembic migrations: `versions/` holds one module per revision.

`vidpipe.db.migrate` applies them (every process at start, `vidpipe replay records`, the tests)
and renders them as plain SQL for `supabase/migrations/`.
"""
