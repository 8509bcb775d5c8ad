"""Read models: one folder per projection, each with its ``schema.sql`` and its event handlers.

Each projection owns one Postgres schema, ``rm_<name>``. Rebuilding a projection replays the
event log into a fresh ``rm_<name>__rebuild`` schema and swaps it in, so the live model keeps
answering queries while its replacement is built.
"""
