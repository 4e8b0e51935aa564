"""The owner of each row, and row-level security for Supabase's roles.

`projects.owner_id` is the front end's user: the recorder fills it from the request's
`metadata.user_id` (docs/supabase.md). On PostgreSQL, row-level security is switched on for
every vidpipe table; when Supabase's roles and `auth.uid()` exist (a Supabase project, or the
test helper that creates them on plain PostgreSQL) the policies and grants are made:
`service_role` writes everything, `authenticated` reads its own `projects` and `events` rows,
`anon` reads nothing. The owner of the tables (the role vidpipe connects as) is not subject to
row-level security, so vidpipe's own stages work on any PostgreSQL. `projects` joins the
`supabase_realtime` publication when there is one, so a page can follow a status live.
SQLite has no row-level security: there only the column and its index are added.

Revision ID: 0002_owner_rls
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_owner_rls"
down_revision: str | None = "0001_baseline"
branch_labels = None
depends_on = None

_TABLES = ("projects", "events", "submissions", "provider_slots")

# Run only where Supabase's roles exist: a plain PostgreSQL has no `authenticated` to grant to.
_POLICIES = """
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
$vidpipe$
"""


def upgrade() -> None:
    postgresql = op.get_context().dialect.name == "postgresql"
    # IF NOT EXISTS only where it is spelled: SQLite's ALTER TABLE has no such clause.
    op.add_column(
        "projects", sa.Column("owner_id", sa.Text), if_not_exists=True if postgresql else None
    )
    op.create_index("ix_projects_owner_id", "projects", ["owner_id"], if_not_exists=True)
    if postgresql:
        for table in _TABLES:
            op.execute(f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(_POLICIES)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP POLICY IF EXISTS vidpipe_service_role_all ON public.{table}")
            op.execute(f"ALTER TABLE public.{table} DISABLE ROW LEVEL SECURITY")
        for table in ("projects", "events"):
            op.execute(f"DROP POLICY IF EXISTS vidpipe_owner_reads ON public.{table}")
    op.drop_index("ix_projects_owner_id", "projects")
    op.drop_column("projects", "owner_id")
