"""One Alembic revision per module, applied in order by `vidpipe.db.migrate`."""
