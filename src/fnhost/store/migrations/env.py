"""Alembic environment: runs against the engine ``Database.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from fnhost.store.tables import metadata

config = context.config
MIGRATION_LOCK = 0x666E686F7374  # "fnhost": the advisory lock key of schema migrations


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # replicas starting together: one migrates, the others wait and find it done
                # (PostgreSQL DDL is transactional; the lock ends with the transaction)
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            context.run_migrations()
        connection.commit()


run_migrations_online()
