"""secops-client: the secops daemon's API for agent frameworks.

    from secops_client import SecopsClient, AsyncSecopsClient, Denied

Identity comes from the kernel: a process started with `secops run --agent NAME` is that
agent, whatever it sends.
"""

from ._common import DEFAULT_SOCKET, Denied, SecopsError
from .aio import AsyncSecopsClient
from .sync import SecopsClient
from .types import Decision, ScanResult, Ticket, Whoami

__all__ = [
    "DEFAULT_SOCKET",
    "AsyncSecopsClient",
    "Decision",
    "Denied",
    "ScanResult",
    "SecopsClient",
    "SecopsError",
    "Ticket",
    "Whoami",
]
__version__ = "0.1.0"
