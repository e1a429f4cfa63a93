"""Schema migrations, one module per version (see ``server.store.migrate``)."""
