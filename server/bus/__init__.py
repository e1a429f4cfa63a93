"""The bus between server nodes (NATS): connection, event fan-out, presence, session routing.

Only used when ``nats_url`` is set; one node alone (SQLite or PostgreSQL) runs without it.
The database stays the system of record: the bus makes nodes learn of changes within
milliseconds, and a lost bus message is still found by the slower database poll.
"""
