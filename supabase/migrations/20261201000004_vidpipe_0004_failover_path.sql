-- vidpipe migration 0004_failover_path, rendered from vidpipe/db/migrations/versions by vidpipe.db.migrate.render_sql: do not edit.

ALTER TABLE projects ADD COLUMN IF NOT EXISTS failover_path VARCHAR(512);
