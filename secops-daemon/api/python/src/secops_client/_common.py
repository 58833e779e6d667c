"""What the sync and asyncio clients share: request bodies, errors, answers."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from .types import Decision

DEFAULT_SOCKET = "/run/secops/secops.sock"

# The daemon answers a ticket wait after at most this long; longer waits are several requests.
MAX_WAIT_SECONDS = 300.0


class SecopsError(Exception):
    """The daemon refused a request (`status` is its HTTP status), or could not be reached
    (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"secops daemon: {status}: {message}")
        self.status = status
        self.message = message


class Denied(Exception):
    """Raised by `guarded` (and by callers) when a check did not allow the action."""

    def __init__(self, decision: Decision) -> None:
        ticket = decision.get("ticket")
        super().__init__(
            f"secops: {decision['verdict']} ({decision.get('rule_id') or 'no rule'}): "
            f"{decision['reason']}" + (f" [ticket #{ticket}]" if ticket else "")
        )
        self.decision = decision


def socket_path(given: Optional[str]) -> str:
    if given:
        return given
    return os.environ.get("SECOPS_SOCKET") or DEFAULT_SOCKET


def check_body(
    action: str,
    path: Optional[str],
    binary: Optional[str],
    addr: Optional[str],
    host: Optional[str],
    port: Optional[int],
    tool: Optional[str],
    arguments: Optional[str],
    durable: bool,
    wait: Optional[str],
) -> Dict[str, Any]:
    obj = {
        k: v
        for k, v in (("path", path), ("binary", binary), ("addr", addr), ("host", host), ("port", port))
        if v is not None
    }
    body: Dict[str, Any] = {"action": action, "object": obj, "durable": durable}
    if tool is not None:
        body["tool"] = tool
    if arguments is not None:
        body["arguments"] = arguments
    if wait is not None:
        body["wait"] = wait
    return body


def wait_seconds(text: Optional[str]) -> float:
    """Seconds in a daemon duration like "30s", "2m" (for the socket's own timeout)."""
    if not text:
        return 0.0
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(f"wait {text!r}: write it like 30s or 2m")


def encode(method: str, path: str, body: Optional[Dict[str, Any]]) -> Tuple[bytes, Dict[str, str]]:
    payload = b"" if body is None else json.dumps(body).encode()
    headers = {"Host": "secops", "Content-Length": str(len(payload))}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return payload, headers


def decode(status: int, content_type: str, data: bytes) -> Any:
    if status >= 400:
        try:
            message = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            message = data.decode(errors="replace")
        raise SecopsError(status, message)
    if content_type.startswith("application/json"):
        return json.loads(data)
    return data.decode()
