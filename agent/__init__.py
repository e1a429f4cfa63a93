"""Helpline device agent (its version is common.version.__version__)."""
