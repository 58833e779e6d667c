"""The blocking client: one kept-alive connection to the daemon's Unix socket."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any, Callable, Dict, List, Optional, cast

from . import _common
from ._common import Denied, SecopsError
from .types import Decision, ScanResult, Ticket, Whoami


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("secops", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class SecopsClient:
    """The daemon's API. Reconnects once when the daemon closed an idle connection.

    Typical use around each tool call::

        secops = SecopsClient()
        decision = secops.check("vcs:push", host="github.com", port=443, tool="git",
                                arguments="git push origin main", wait="2m")
        if decision["verdict"] != "allow":
            raise Denied(decision)
        output = secops.scan(run_the_tool(), tool="git")["output"]
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: float = 10.0) -> None:
        self.socket_path = _common.socket_path(socket_path)
        self.timeout = timeout
        self._conn: Optional[_UnixConnection] = None
        self._conn_timeout = timeout

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "SecopsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, body: Optional[Dict[str, Any]] = None, extra_timeout: float = 0.0
    ) -> Any:
        payload, headers = _common.encode(method, path, body)
        timeout = self.timeout + extra_timeout
        for attempt in (1, 2):
            if self._conn is None or self._conn_timeout != timeout:
                self.close()
                self._conn = _UnixConnection(self.socket_path, timeout)
                self._conn_timeout = timeout
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException) as e:
                # An idle kept-alive connection the daemon closed: once more on a new one.
                self.close()
                if attempt == 2:
                    raise SecopsError(0, f"cannot talk to {self.socket_path}: {e}") from e
            except OSError as e:
                self.close()
                raise SecopsError(0, f"cannot reach {self.socket_path}: {e}") from e
        return _common.decode(response.status, response.getheader("Content-Type", ""), data)

    def whoami(self) -> Whoami:
        return cast(Whoami, self._request("GET", "/v1/whoami"))

    def check(
        self,
        action: str,
        path: Optional[str] = None,
        binary: Optional[str] = None,
        addr: Optional[str] = None,
        host: Optional[str] = None,
        port: Optional[int] = None,
        tool: Optional[str] = None,
        arguments: Optional[str] = None,
        durable: bool = False,
        wait: Optional[str] = None,
    ) -> Decision:
        """May the calling agent do `action` ("category:action") on this object? With
        `wait` (e.g. "30s", at most "5m"), an escalation waits that long for a human and the
        answer is what the decision makes of it: allow once approved, deny once denied."""
        body = _common.check_body(action, path, binary, addr, host, port, tool, arguments, durable, wait)
        return cast(Decision, self._request("POST", "/v1/check", body, _common.wait_seconds(wait)))

    def scan(self, output: str, tool: Optional[str] = None) -> ScanResult:
        """Scans tool output by the agent's policy; `output` of the answer is what to use."""
        body: Dict[str, Any] = {"output": output}
        if tool is not None:
            body["tool"] = tool
        return cast(ScanResult, self._request("POST", "/v1/scan", body))

    def ticket(self, ticket: int) -> Ticket:
        return cast(Ticket, self._request("GET", f"/v1/tickets/{int(ticket)}"))

    def wait_for_ticket(self, ticket: int, timeout: float = 300.0) -> Ticket:
        """Blocks until a human (or the timeout policy) decides `ticket`, or `timeout`
        seconds pass; returns the ticket (its `status` is still "open" if nobody decided)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = max(0.0, min(left, _common.MAX_WAIT_SECONDS))
            answer = cast(
                Ticket,
                self._request("GET", f"/v1/tickets/{int(ticket)}?wait={int(wait * 1000)}ms", None, wait),
            )
            if answer["status"] != "open" or left <= wait:
                return answer

    def guarded(
        self,
        action: str,
        run: Callable[[], str],
        tool: Optional[str] = None,
        arguments: Optional[str] = None,
        wait: Optional[str] = None,
        **obj: Any,
    ) -> Optional[str]:
        """check -> run() -> scan, the whole hook around one tool call. Raises Denied unless
        the check allows; returns the scanned output (None if withheld)."""
        decision = self.check(action, tool=tool, arguments=arguments, wait=wait, **obj)
        if decision["verdict"] != "allow":
            raise Denied(decision)
        return self.scan(run(), tool=tool)["output"]

    # Admin routes (root or the admin group, outside every agent cgroup).
    def status(self) -> Dict[str, Any]:
        return cast(Dict[str, Any], self._request("GET", "/v1/status"))

    def approvals(self, status: str = "open") -> List[Ticket]:
        return cast(List[Ticket], self._request("GET", f"/v1/approvals?status={status}")["tickets"])

    def approve(self, ticket: int, duration: str = "10m", reason: Optional[str] = None, once: bool = False) -> Ticket:
        body = {"for": duration, "reason": reason, "once": once}
        return cast(Ticket, self._request("POST", f"/v1/approvals/{int(ticket)}/approve", body))

    def deny(self, ticket: int, reason: Optional[str] = None) -> Ticket:
        return cast(Ticket, self._request("POST", f"/v1/approvals/{int(ticket)}/deny", {"reason": reason}))

    def metrics(self) -> str:
        return cast(str, self._request("GET", "/metrics"))
