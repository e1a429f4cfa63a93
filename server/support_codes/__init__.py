"""Support codes: one attended session for a machine that is not enrolled (issue 18 part 4).

Layout: :mod:`.settings` (the ``[server.support_codes]`` table and the guessing bound the
server refuses to start without), :mod:`.codes` (drawing, grouping, the peppered HMAC),
:mod:`.repository` (all SQL), :mod:`.redeem` (rate limits, one guess per connection, audit),
:mod:`.connection` (the client's redeem websocket and session tunnel on the console port),
:mod:`.api` (the technician's routes). The session itself is an ordinary session of
:mod:`server.sessions` whose ``device_id`` is the support client's id (``spc-…``), so it is in
the session history and the audit; the client is a row of ``support_clients``, never a device.
:mod:`.feature` wires it into the server (not this module: :mod:`server.config` imports :mod:`.settings`).
"""
