"""Python client of sandboxd's HTTP API: see sandboxd.client.Client."""

from .client import (
    OPERATIONS,
    Client,
    DeleteResult,
    Denial,
    ExecEvent,
    ExecResult,
    FileInfo,
    Page,
    WorkspaceDeleteResult,
    Session,
)
from .errors import (
    ERROR_CLASSES,
    Busy,
    Conflict,
    Expired,
    Full,
    Invalid,
    LimitExceeded,
    NotFound,
    SandboxdError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WorkspaceInUse,
)

__all__ = [
    "OPERATIONS", "Client", "DeleteResult", "Denial", "ExecEvent", "ExecResult", "FileInfo", "Page", "Session",
    "WorkspaceDeleteResult",
    "ERROR_CLASSES", "Busy", "Conflict", "Expired", "Full", "Invalid", "LimitExceeded", "NotFound",
    "SandboxdError", "TooLarge",
    "Unauthorized", "Unavailable", "WorkspaceInUse",
]
