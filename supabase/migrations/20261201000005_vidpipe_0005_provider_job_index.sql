-- vidpipe migration 0005_provider_job_index, rendered from vidpipe/db/migrations/versions by vidpipe.db.migrate.render_sql: do not edit.

CREATE INDEX IF NOT EXISTS ix_projects_provider_job ON projects (provider, sora_job_id);
