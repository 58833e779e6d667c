"""A client for the secops daemon's API, using only the Python standard library.

The daemon listens on a Unix socket (default /run/secops/secops.sock, or $SECOPS_SOCKET).
Who you are is decided by the kernel: a process started with `secops run --agent NAME`
is that agent, whatever it sends. Typical use in an agent framework, around each tool call:

    from secops_client import SecopsClient, Denied

    secops = SecopsClient()
    decision = secops.check("vcs:push", host="github.com", port=443,
                            tool="git", arguments="git push origin main")
    if decision["verdict"] != "allow":
        raise Denied(decision)          # escalate: decision["ticket"] waits for a human
    output = run_the_tool()
    output = secops.scan(output, tool="git")["output"]   # None when withheld

Errors from the daemon (4xx/5xx) raise SecopsError with the daemon's message.
"""

import http.client
import json
import os
import socket

DEFAULT_SOCKET = "/run/secops/secops.sock"


class SecopsError(Exception):
    """The daemon refused a request, or could not be reached."""

    def __init__(self, status, message):
        super().__init__(f"secops daemon: {status}: {message}")
        self.status = status
        self.message = message


class Denied(Exception):
    """Raised by callers when a check did not allow the action."""

    def __init__(self, decision):
        super().__init__(
            f"secops: {decision['verdict']} ({decision.get('rule_id') or 'no rule'}): "
            f"{decision['reason']}"
            + (f" [ticket #{decision['ticket']}]" if decision.get("ticket") else "")
        )
        self.decision = decision


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("secops", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class SecopsClient:
    """One kept-alive connection to the daemon; reconnects when the daemon closed it."""

    def __init__(self, socket_path=None, timeout=10.0):
        self.socket_path = socket_path or os.environ.get("SECOPS_SOCKET", DEFAULT_SOCKET)
        self.timeout = timeout
        self._conn = None

    def _request(self, method, path, body=None):
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException, BrokenPipeError) as e:
                # An idle kept-alive connection the daemon closed: try once on a new one.
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise SecopsError(0, f"cannot talk to {self.socket_path}: {e}") from e
            except OSError as e:
                self._conn = None
                raise SecopsError(0, f"cannot reach {self.socket_path}: {e}") from e
        if response.status >= 400:
            try:
                message = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace")
            raise SecopsError(response.status, message)
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(data)
        return data.decode()

    def whoami(self):
        return self._request("GET", "/v1/whoami")

    def check(self, action, path=None, binary=None, addr=None, host=None, port=None,
              tool=None, arguments=None, durable=False):
        """Asks whether the calling agent may do `action` ("category:action") on an object.
        Returns the decision: verdict (allow, deny, escalate), risk, rule_id, reason,
        agent, ticket (for escalations) and audit_seq (with durable=True)."""
        obj = {k: v for k, v in (("path", path), ("binary", binary), ("addr", addr),
                                  ("host", host), ("port", port)) if v is not None}
        body = {"action": action, "object": obj, "durable": durable}
        if tool is not None:
            body["tool"] = tool
        if arguments is not None:
            body["arguments"] = arguments
        return self._request("POST", "/v1/check", body)

    def scan(self, output, tool=None):
        """Scans tool output. Returns output (redacted, unchanged, or None when withheld),
        action (clean, redacted, withheld, logged-only) and findings (counts per category)."""
        body = {"output": output}
        if tool is not None:
            body["tool"] = tool
        return self._request("POST", "/v1/scan", body)

    def guarded(self, action, run, tool=None, arguments=None, **obj):
        """check -> run() -> scan, the whole in-process hook around one tool call. Raises
        Denied unless the check allows; returns the scanned output (None if withheld)."""
        decision = self.check(action, tool=tool, arguments=arguments, **obj)
        if decision["verdict"] != "allow":
            raise Denied(decision)
        return self.scan(run(), tool=tool)["output"]

    # Admin routes (root or the admin group, outside every agent cgroup).
    def status(self):
        return self._request("GET", "/v1/status")

    def approvals(self, status="open"):
        return self._request("GET", f"/v1/approvals?status={status}")["tickets"]

    def approve(self, ticket, duration="10m", reason=None):
        return self._request("POST", f"/v1/approvals/{int(ticket)}/approve",
                             {"for": duration, "reason": reason})

    def deny(self, ticket, reason=None):
        return self._request("POST", f"/v1/approvals/{int(ticket)}/deny", {"reason": reason})

    def metrics(self):
        return self._request("GET", "/metrics")
