-- vidpipe migration 0003_costs_budgets, rendered from vidpipe/db/migrations/versions by vidpipe.db.migrate.render_sql: do not edit.

ALTER TABLE projects ADD COLUMN IF NOT EXISTS estimated_cost_usd FLOAT;

ALTER TABLE projects ADD COLUMN IF NOT EXISTS cost_usd FLOAT;

ALTER TABLE projects ADD COLUMN IF NOT EXISTS price_version VARCHAR(32);

CREATE TABLE IF NOT EXISTS budget_buckets (
    bucket VARCHAR(255) NOT NULL,
    spent_micros BIGINT NOT NULL,
    limit_micros BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (bucket)
);

CREATE TABLE IF NOT EXISTS budget_reservations (
    request_id VARCHAR(128) NOT NULL,
    bucket VARCHAR(255) NOT NULL,
    amount_micros BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (request_id, bucket)
);

ALTER TABLE public.budget_buckets ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.budget_reservations ENABLE ROW LEVEL SECURITY;

DO $vidpipe$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon')
        AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated')
        AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role')
    THEN
        REVOKE ALL ON public.budget_buckets, public.budget_reservations
            FROM anon, authenticated;
        GRANT ALL ON public.budget_buckets, public.budget_reservations TO service_role;
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.budget_buckets;
        CREATE POLICY vidpipe_service_role_all ON public.budget_buckets
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.budget_reservations;
        CREATE POLICY vidpipe_service_role_all ON public.budget_reservations
            FOR ALL TO service_role USING (true) WITH CHECK (true);
    END IF;
END
$vidpipe$;
