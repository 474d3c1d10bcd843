"""Persistence: SQLAlchemy 2 tables and queries, Alembic migrations, per-dialect settings.

Store functions take ``session=`` and return ORM rows or plain values; they know nothing
of HTTP or processes.
"""
