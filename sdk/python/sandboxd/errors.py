"""Exceptions of the sandboxd client: one class per error code of the server.

Every answer that is not 2xx is raised as a SandboxdError carrying the status, the
stable ``code`` of its problem document (RFC 9457) and the detail; the class says the
code, as the Go client's sentinels do (client/errors.go):

    not_found -> NotFound          conflict -> Conflict        expired -> Expired
    invalid, bad_request, unsupported_media_type -> Invalid
    too_large -> TooLarge (an Invalid too)                     busy -> Busy
    unavailable -> Unavailable     unauthorized -> Unauthorized
    method_not_allowed, internal, anything else -> SandboxdError
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Type


class SandboxdError(Exception):
    """An error the server answered with (or a streamed exec ended with)."""

    def __init__(self, status: int, code: str, title: str = "", detail: str = "") -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        text = f"{status} {title or code}"
        super().__init__(f"{text}: {detail}" if detail else text)


class NotFound(SandboxdError):
    """not_found: the chat has no sandbox, or the file does not exist."""


class Conflict(SandboxdError):
    """conflict: the chat's live sandbox is another agent's or folder's."""


class Expired(SandboxdError):
    """expired: the chat's sandbox has passed its TTL; create it again."""


class WorkspaceInUse(Conflict):
    """workspace_in_use: the workspace folder asked for is another chat's (its derived folder, or another chat's sandbox's); nothing was made."""


class Invalid(SandboxdError):
    """invalid, bad_request, unsupported_media_type: the request was refused; nothing changed."""


class TooLarge(Invalid):
    """too_large: a body or file is over the server's limit."""


class Busy(SandboxdError):
    """busy: the sandbox runs as many commands as it may; try again later."""


class LimitExceeded(Busy):
    """limit_exceeded: the caller's tenant holds as many sandboxes or commands as it may; try again later."""


class Full(SandboxdError):
    """full: the volume root is below its free-space floor or the workspace is full; nothing was made or written."""


class Unavailable(SandboxdError):
    """unavailable: the engine or registry could not serve; try again later."""


class Unauthorized(SandboxdError):
    """unauthorized: the token is missing or not accepted."""


#: The exception class of each error code (the table errorCodes of internal/httpapi).
ERROR_CLASSES: Dict[str, Type[SandboxdError]] = {
    "not_found": NotFound,
    "conflict": Conflict,
    "expired": Expired,
    "workspace_in_use": WorkspaceInUse,
    "invalid": Invalid,
    "bad_request": Invalid,
    "unsupported_media_type": Invalid,
    "too_large": TooLarge,
    "busy": Busy,
    "limit_exceeded": LimitExceeded,
    "full": Full,
    "unavailable": Unavailable,
    "unauthorized": Unauthorized,
    "method_not_allowed": SandboxdError,
    "internal": SandboxdError,
}

# The code of an answer without one (an older server, a proxy), by its status.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "busy",
    503: "unavailable",
    507: "full",
}


def error_for(status: int, code: Optional[str], title: str = "", detail: str = "") -> SandboxdError:
    """The exception of a code (or, without one, of the status)."""
    if not code or len(code) > 64:
        code = _STATUS_CODES.get(status, "internal" if status >= 500 else "")
    cls = ERROR_CLASSES.get(code, SandboxdError)
    return cls(status, code, title, detail)


def problem(status: int, reason: str, content_type: str, body: bytes) -> SandboxdError:
    """The exception of a non-2xx answer; a body that is not a problem document gives
    its start as the detail."""
    doc: dict = {}
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/problem+json", "application/json"):
        try:
            parsed = json.loads(body.decode("utf-8", "replace"))
            if isinstance(parsed, dict):
                doc = parsed
        except ValueError:
            pass
    code = doc.get("code") if isinstance(doc.get("code"), str) else None
    title = doc.get("title") if isinstance(doc.get("title"), str) else reason
    detail = doc.get("detail") if isinstance(doc.get("detail"), str) else ""
    if not detail:
        detail = body[:200].decode("utf-8", "replace").strip()
    return error_for(status, code, title, detail)
