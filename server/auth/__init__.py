"""Who is asking, and what may they do: principals, rights per device group, the auth middleware."""
