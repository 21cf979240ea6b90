"""Persistence: the database engine, the tables, the repository over them, and the schema
migrations (Alembic). The innermost room: it imports no other part of the service but
:mod:`service.errors`."""
