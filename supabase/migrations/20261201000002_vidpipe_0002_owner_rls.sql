-- vidpipe migration 0002_owner_rls, rendered from vidpipe/db/migrations/versions by vidpipe.db.migrate.render_sql: do not edit.

ALTER TABLE projects ADD COLUMN IF NOT EXISTS owner_id TEXT;

CREATE INDEX IF NOT EXISTS ix_projects_owner_id ON projects (owner_id);

ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.submissions ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.provider_slots ENABLE ROW LEVEL SECURITY;

DO $vidpipe$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon')
        AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated')
        AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role')
        AND to_regprocedure('auth.uid()') IS NOT NULL
    THEN
        REVOKE ALL ON public.projects, public.events, public.submissions,
            public.provider_slots FROM anon, authenticated;
        GRANT SELECT ON public.projects, public.events TO authenticated;
        GRANT ALL ON public.projects, public.events, public.submissions,
            public.provider_slots TO service_role;
        GRANT USAGE, SELECT ON SEQUENCE public.projects_id_seq, public.events_seq_seq
            TO service_role;
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.projects;
        CREATE POLICY vidpipe_service_role_all ON public.projects
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.events;
        CREATE POLICY vidpipe_service_role_all ON public.events
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.submissions;
        CREATE POLICY vidpipe_service_role_all ON public.submissions
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        DROP POLICY IF EXISTS vidpipe_service_role_all ON public.provider_slots;
        CREATE POLICY vidpipe_service_role_all ON public.provider_slots
            FOR ALL TO service_role USING (true) WITH CHECK (true);
        -- (select auth.uid()): evaluated once per statement, not once per row.
        DROP POLICY IF EXISTS vidpipe_owner_reads ON public.projects;
        CREATE POLICY vidpipe_owner_reads ON public.projects
            FOR SELECT TO authenticated
            USING (owner_id = (SELECT auth.uid())::text);
        DROP POLICY IF EXISTS vidpipe_owner_reads ON public.events;
        CREATE POLICY vidpipe_owner_reads ON public.events
            FOR SELECT TO authenticated
            USING (EXISTS (
                SELECT FROM public.projects AS p
                WHERE p.request_id = events.request_id
                    AND p.owner_id = (SELECT auth.uid())::text
            ));
    END IF;
    IF EXISTS (SELECT FROM pg_publication WHERE pubname = 'supabase_realtime')
        AND NOT EXISTS (
            SELECT FROM pg_publication_tables
            WHERE pubname = 'supabase_realtime' AND schemaname = 'public'
                AND tablename = 'projects'
        )
    THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE public.projects;
    END IF;
END
$vidpipe$;
