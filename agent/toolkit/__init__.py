"""The in-session toolkit on the device: chat, file transfer and clipboard (issue 15).

:mod:`.caps` decides what a session may do (consent, grant, local policy); :mod:`.inbox` writes
a technician's file into the user's Downloads, :mod:`.outbox` reads a file the technician may
fetch; :mod:`.session` answers the toolkit messages of one screen session's tunnel.
"""
