"""One module per ``helpline`` subcommand; each has ``register(subparsers)``."""
