"""The PostgreSQL tests use ``pg_server`` and ``pg_url`` from the suite's conftest.py (one real
server per test session, shared with the command-line and documentation tests)."""
