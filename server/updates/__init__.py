"""Signed self-update, server side: the server carries release manifests (approver-signed ``release``
documents) and artifact bytes, and drives rollouts in waves; it can withhold an update, never make one.
:mod:`.waves` (pure) decides, :mod:`.repository` stores, :mod:`.service` checks uploads and plans
rollouts, :mod:`.feature` offers and listens, :mod:`.api` is the REST surface."""
