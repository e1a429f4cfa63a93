"""The support desk's numbers (issue 19): MTTA, time to connect, AHT, MTTR, FCR, CSAT.

:mod:`.compute` turns typed records into figures (pure); :mod:`.source` reads the records from
the store; :mod:`.api` serves them (JSON, CSV); :mod:`.metrics` exposes the headline figures to
Prometheus; :mod:`.surveys` asks and stores the CSAT survey; :mod:`.feature` wires them in.
"""
