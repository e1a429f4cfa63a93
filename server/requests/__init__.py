"""Support requests from the device (issue 18): repository, agent messages, REST routes, live queue, announcements."""
