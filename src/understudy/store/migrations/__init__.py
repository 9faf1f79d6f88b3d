"""Alembic migrations of the understudy database (the schema's single source of truth)."""
