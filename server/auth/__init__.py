"""Who is asking, and what may they do: principals and rights per device group (enforced by server.api)."""
