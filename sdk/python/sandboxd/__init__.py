"""Python client of sandboxd's HTTP API: see sandboxd.client.Client."""

from .client import (
    OPERATIONS,
    Client,
    DeleteResult,
    ExecEvent,
    ExecResult,
    FileInfo,
    Page,
    Session,
)
from .errors import (
    ERROR_CLASSES,
    Busy,
    Conflict,
    Expired,
    Invalid,
    NotFound,
    SandboxdError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "OPERATIONS", "Client", "DeleteResult", "ExecEvent", "ExecResult", "FileInfo", "Page", "Session",
    "ERROR_CLASSES", "Busy", "Conflict", "Expired", "Invalid", "NotFound", "SandboxdError", "TooLarge",
    "Unauthorized", "Unavailable",
]
