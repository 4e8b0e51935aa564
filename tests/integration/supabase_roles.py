"""Supabase's database roles and `auth.uid()` on a plain PostgreSQL, for the RLS tests.

A Supabase project has these already; the migrations never create them (they only use them
when they exist). This helper makes them the way Supabase's own setup does: `anon` and
`authenticated` (NOLOGIN, reached with SET ROLE by PostgREST), `service_role` with BYPASSRLS,
and `auth.uid()` reading the `sub` claim of `request.jwt.claims`, which PostgREST sets per
request from the caller's JWT.
"""

from __future__ import annotations

import psycopg

_ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another test created them between our look and our CREATE: same roles
END
$$
"""

_AUTH = """
CREATE SCHEMA IF NOT EXISTS auth;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::json ->> 'sub')
    )::uuid
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
"""


def create_supabase_roles(libpq_url: str) -> None:
    """Make Supabase's roles (cluster-wide, once) and `auth.uid()` in this URL's database."""
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute(_ROLES)
        conn.execute(_AUTH)
