"""One created ticket per (connector, request), enforced by the store (review finding 9).

``POST /api/v1/requests/{id}/tickets/new`` reserves its link row under this index before it asks
the ticket system, so a double click or two nodes cannot both open an incident. Rows from
before this version that break the rule (the race happened) keep their link but only the
oldest counts as created.
"""

VERSION = 23

STATEMENTS = [
    """UPDATE ticket_links SET created_ticket = 0 WHERE created_ticket = 1 AND EXISTS (
        SELECT 1 FROM ticket_links o WHERE o.created_ticket = 1 AND o.connector_id = ticket_links.connector_id
        AND o.request_id = ticket_links.request_id AND (o.created_at < ticket_links.created_at
        OR (o.created_at = ticket_links.created_at AND o.id < ticket_links.id)))""",
    "CREATE UNIQUE INDEX ticket_links_created_once ON ticket_links (connector_id, request_id) WHERE created_ticket = 1",
]
