"""Data lifecycle (issue 20): retention periods, purging a decommissioned device, recordings in shared storage."""
