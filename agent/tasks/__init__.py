"""Overnight maintenance tasks on the agent: catalog, checks, runner, replay ledger and results outbox.

Nothing runs unless the agent itself verified the approver-signed task authorization the run
carries — from its pinned root, for this device, this action, these exact script bytes and
parameters, inside the signed window — and this occurrence has not run here before.
"""
