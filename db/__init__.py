"""Database access: schema, engine, readers and writers (SQLAlchemy Core)."""
