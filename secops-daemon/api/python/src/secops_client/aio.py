"""The asyncio client: the same methods as SecopsClient, as coroutines, over one kept-alive
connection (requests on it take turns)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, cast

from . import _common
from ._common import Denied, SecopsError
from .types import Decision, ScanResult, Ticket, Whoami


class AsyncSecopsClient:
    """``async with AsyncSecopsClient() as secops: await secops.check("vcs:push", ...)``"""

    def __init__(self, socket_path: Optional[str] = None, timeout: float = 10.0) -> None:
        self.socket_path = _common.socket_path(socket_path)
        self.timeout = timeout
        self._streams: Optional[Tuple[asyncio.StreamReader, asyncio.StreamWriter]] = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._streams is not None:
            _, writer = self._streams
            self._streams = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> "AsyncSecopsClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _exchange(self, method: str, path: str, payload: bytes, headers: Dict[str, str]) -> Tuple[int, str, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_unix_connection(self.socket_path)
        reader, writer = self._streams
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode() + payload)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the daemon closed the connection")
        status = int(status_line.split()[1])
        length = 0
        content_type = ""
        close = False
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "content-type":
                content_type = value
            elif name == "connection" and value.lower() == "close":
                close = True
        data = await reader.readexactly(length)
        if close:
            await self.close()
        return status, content_type, data

    async def _request(
        self, method: str, path: str, body: Optional[Dict[str, Any]] = None, extra_timeout: float = 0.0
    ) -> Any:
        payload, headers = _common.encode(method, path, body)
        async with self._lock:
            for attempt in (1, 2):
                try:
                    status, content_type, data = await asyncio.wait_for(
                        self._exchange(method, path, payload, headers), self.timeout + extra_timeout
                    )
                    break
                except (ConnectionError, asyncio.IncompleteReadError) as e:
                    await self.close()
                    if attempt == 2:
                        raise SecopsError(0, f"cannot talk to {self.socket_path}: {e}") from e
                except (OSError, asyncio.TimeoutError) as e:
                    await self.close()
                    raise SecopsError(0, f"cannot reach {self.socket_path}: {e!r}") from e
        return _common.decode(status, content_type, data)

    async def whoami(self) -> Whoami:
        return cast(Whoami, await self._request("GET", "/v1/whoami"))

    async def check(
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
        body = _common.check_body(action, path, binary, addr, host, port, tool, arguments, durable, wait)
        return cast(Decision, await self._request("POST", "/v1/check", body, _common.wait_seconds(wait)))

    async def scan(self, output: str, tool: Optional[str] = None) -> ScanResult:
        body: Dict[str, Any] = {"output": output}
        if tool is not None:
            body["tool"] = tool
        return cast(ScanResult, await self._request("POST", "/v1/scan", body))

    async def ticket(self, ticket: int) -> Ticket:
        return cast(Ticket, await self._request("GET", f"/v1/tickets/{int(ticket)}"))

    async def wait_for_ticket(self, ticket: int, timeout: float = 300.0) -> Ticket:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            wait = max(0.0, min(left, _common.MAX_WAIT_SECONDS))
            answer = cast(
                Ticket,
                await self._request("GET", f"/v1/tickets/{int(ticket)}?wait={int(wait * 1000)}ms", None, wait),
            )
            if answer["status"] != "open" or left <= wait:
                return answer

    async def guarded(
        self,
        action: str,
        run: Callable[[], Awaitable[str]],
        tool: Optional[str] = None,
        arguments: Optional[str] = None,
        wait: Optional[str] = None,
        **obj: Any,
    ) -> Optional[str]:
        decision = await self.check(action, tool=tool, arguments=arguments, wait=wait, **obj)
        if decision["verdict"] != "allow":
            raise Denied(decision)
        return (await self.scan(await run(), tool=tool))["output"]

    async def approvals(self, status: str = "open") -> List[Ticket]:
        answer = await self._request("GET", f"/v1/approvals?status={status}")
        return cast(List[Ticket], answer["tickets"])
