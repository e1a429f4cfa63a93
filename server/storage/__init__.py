"""Where the server keeps files: sealed at rest (``sealed``)."""
