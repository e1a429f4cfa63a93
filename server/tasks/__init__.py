"""Maintenance tasks on the server: store, schedules (cron in device time), rollouts, API."""
