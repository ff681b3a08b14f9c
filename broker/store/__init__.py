"""The central store: one async SQL layer (SQLAlchemy Core) for SQLite and PostgreSQL, Alembic migrations."""
