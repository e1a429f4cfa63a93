"""The server's storage: one small portable-SQL interface, SQLite or PostgreSQL behind it."""

from .database import Database, Row, Transaction, open_database

__all__ = ["Database", "Row", "Transaction", "open_database"]
