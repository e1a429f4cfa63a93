"""Helpline relay server (its version is common.version.__version__)."""
