-- vidpipe migration 0001_baseline, rendered from vidpipe/db/migrations/versions by vidpipe.db.migrate.render_sql: do not edit.

CREATE TABLE IF NOT EXISTS projects (
    id SERIAL NOT NULL,
    request_id VARCHAR(128) NOT NULL,
    parent_request_id VARCHAR(128),
    prompt TEXT,
    input_image_url TEXT,
    output_image_url TEXT,
    status VARCHAR(32) NOT NULL,
    progress INTEGER,
    provider VARCHAR(64),
    model VARCHAR(128),
    sora_job_id VARCHAR(256),
    sora_generation_id VARCHAR(256),
    azure_endpoint VARCHAR(256),
    attempted_download_at TIMESTAMP WITH TIME ZONE,
    error_message TEXT,
    placeholder BOOLEAN NOT NULL,
    video_size_bytes BIGINT,
    video_sha256 VARCHAR(64),
    expires_at TIMESTAMP WITH TIME ZONE,
    user_message TEXT,
    retry_attempts INTEGER,
    next_retry_at TIMESTAMP WITH TIME ZONE,
    failover_request_id VARCHAR(128),
    metadata JSON,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (request_id)
);

CREATE TABLE IF NOT EXISTS events (
    seq SERIAL NOT NULL,
    event_id VARCHAR(36) NOT NULL,
    request_id VARCHAR(128) NOT NULL,
    event_type VARCHAR(64) NOT NULL,
    topic VARCHAR(255) NOT NULL,
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    payload JSON NOT NULL,
    PRIMARY KEY (seq),
    UNIQUE (event_id)
);

CREATE TABLE IF NOT EXISTS submissions (
    request_id VARCHAR(128) NOT NULL,
    provider VARCHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL,
    provider_job_id VARCHAR(256),
    endpoint_host VARCHAR(256),
    model VARCHAR(128),
    intent_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (request_id)
);

CREATE TABLE IF NOT EXISTS provider_slots (
    provider VARCHAR(64) NOT NULL,
    in_use INTEGER NOT NULL,
    PRIMARY KEY (provider)
);

CREATE INDEX IF NOT EXISTS ix_projects_parent_request_id ON projects (parent_request_id);

CREATE INDEX IF NOT EXISTS ix_events_request_id ON events (request_id);

ALTER TABLE projects
    ADD COLUMN IF NOT EXISTS parent_request_id VARCHAR(128),
    ADD COLUMN IF NOT EXISTS prompt TEXT,
    ADD COLUMN IF NOT EXISTS input_image_url TEXT,
    ADD COLUMN IF NOT EXISTS output_image_url TEXT,
    ADD COLUMN IF NOT EXISTS progress INTEGER,
    ADD COLUMN IF NOT EXISTS provider VARCHAR(64),
    ADD COLUMN IF NOT EXISTS model VARCHAR(128),
    ADD COLUMN IF NOT EXISTS sora_job_id VARCHAR(256),
    ADD COLUMN IF NOT EXISTS sora_generation_id VARCHAR(256),
    ADD COLUMN IF NOT EXISTS azure_endpoint VARCHAR(256),
    ADD COLUMN IF NOT EXISTS attempted_download_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS error_message TEXT,
    ADD COLUMN IF NOT EXISTS video_size_bytes BIGINT,
    ADD COLUMN IF NOT EXISTS video_sha256 VARCHAR(64),
    ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS user_message TEXT,
    ADD COLUMN IF NOT EXISTS retry_attempts INTEGER,
    ADD COLUMN IF NOT EXISTS next_retry_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS failover_request_id VARCHAR(128),
    ADD COLUMN IF NOT EXISTS metadata JSON;

ALTER TABLE submissions
    ADD COLUMN IF NOT EXISTS provider_job_id VARCHAR(256),
    ADD COLUMN IF NOT EXISTS endpoint_host VARCHAR(256),
    ADD COLUMN IF NOT EXISTS model VARCHAR(128),
    ADD COLUMN IF NOT EXISTS intent_at TIMESTAMP WITH TIME ZONE;
