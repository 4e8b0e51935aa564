"""The database: tables and the engine, and the two stores built on them.

tables   the tables, the engine, and `insert_ignore` (the one dialect-aware upsert)
ledger   the submitter's ledger: request -> provider job, and the per-provider quota
records  the recorder's event log and `projects` table (the projection itself is policy)
"""
