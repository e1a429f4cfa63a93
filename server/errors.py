"""The server's one error type for everything a client is told.

    Exception
     └── ApiError(status, code, message)   raised anywhere below a route; rendered by
                                           server.api.middleware.errors as
                                           {"error": {"code": ..., "message": ...}}

Domain code (stores, managers, services) raises ``ApiError`` with the HTTP status a client
should see: 400 ``invalid`` for bad input, 404 ``not_found``, 409 for conflicts with current
state, 403 ``forbidden``. There are no per-area subclasses: the ``code`` string is what a
client switches on, and it is documented with each route.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answered to the API client as ``status`` with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        return cls(400, "invalid", message)

    @classmethod
    def not_found(cls, what: str) -> ApiError:
        return cls(404, "not_found", f"no such {what}")

    @classmethod
    def conflict(cls, code: str, message: str) -> ApiError:
        return cls(409, code, message)
