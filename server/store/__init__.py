"""The server's storage: one small portable-SQL interface, SQLite or PostgreSQL behind it."""

from .database import Database, Row, Transaction, open_database
from .errors import StoreUnavailable

__all__ = ["Database", "Row", "StoreUnavailable", "Transaction", "open_database"]
