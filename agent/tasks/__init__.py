"""Overnight maintenance tasks on the agent: catalog, checks, runner and results outbox.

Nothing runs unless the agent itself verified a grant that allows ``tasks`` now (and, for a
script, the org grant key's signature over the script and its parameters).
"""
