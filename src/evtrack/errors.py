"""Errors that cross layer boundaries, shaped like MLflow's so the API can render them as is.

The domain raises these; the HTTP layer turns them into ``{"error_code", "message"}`` with the
status MLflow's client expects for each code (its retry and fallback logic keys on both).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
    RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
    BAD_REQUEST = "BAD_REQUEST"
    ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_PARAMETER_VALUE: 400,
    ErrorCode.RESOURCE_ALREADY_EXISTS: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.RESOURCE_DOES_NOT_EXIST: 404,
    ErrorCode.ENDPOINT_NOT_FOUND: 404,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.RESOURCE_CONFLICT: 409,
    ErrorCode.REQUEST_LIMIT_EXCEEDED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.NOT_IMPLEMENTED: 501,
    ErrorCode.TEMPORARILY_UNAVAILABLE: 503,
    # The artifact store is full. 507 Insufficient Storage, not a 500: MLflow's client retries
    # 500 (and 429, MLflow's own status for this code) up to seven times, re-uploading the
    # whole file each time into a disk that is still full; 507 is not retried, so the user
    # sees the message at once.
    ErrorCode.RESOURCE_EXHAUSTED: 507,
}


class EvtrackError(Exception):
    """A failure with an MLflow error code; the message is shown to the user verbatim."""

    def __init__(
        self, code: ErrorCode, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Extra response headers, e.g. Retry-After on a 429.
        self.headers = headers or {}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def invalid(message: str) -> EvtrackError:
    return EvtrackError(ErrorCode.INVALID_PARAMETER_VALUE, message)


def not_found(message: str) -> EvtrackError:
    return EvtrackError(ErrorCode.RESOURCE_DOES_NOT_EXIST, message)


def already_exists(message: str) -> EvtrackError:
    return EvtrackError(ErrorCode.RESOURCE_ALREADY_EXISTS, message)


def conflict(message: str) -> EvtrackError:
    return EvtrackError(ErrorCode.RESOURCE_CONFLICT, message)
