"""The README's worked example: wrap tool calls with check and scan, wait for a human.

    pip install ./secops-daemon/api/python
    secops run --agent coder -- python3 example.py

Prints one line per step, so a test can follow along.
"""

import asyncio
import subprocess

from secops_client import AsyncSecopsClient, Denied, SecopsClient

secops = SecopsClient()  # $SECOPS_SOCKET or /run/secops/secops.sock
print("whoami", secops.whoami()["agent"])


def run_tool(argv: list[str]) -> str:
    """A tool call: asked about first, its output scanned before the model sees it."""
    out = secops.guarded(
        "code:exec",
        lambda: subprocess.run(argv, capture_output=True, text=True).stdout,
        tool=argv[0],
        arguments=" ".join(argv),
    )
    return out or ""


print("echo", run_tool(["echo", "key AKIAQ3EGRV7PLMNX5ZQW in the logs"]).strip())

try:
    secops.guarded("vcs:force_push", lambda: "never runs", tool="git", arguments="git push --force")
    print("force_push allowed")
except Denied as e:
    print("force_push", e.decision["verdict"], e.decision["rule_id"])

# An escalation: a human decides (`secops approvals watch`, or a webhook's receiver).
decision = secops.check("deploy:release", host="prod.example.com")
print("release", decision["verdict"], "ticket" if decision["ticket"] else "no-ticket")
if decision["ticket"] is not None:
    ticket = secops.wait_for_ticket(decision["ticket"], timeout=60)
    print("ticket", ticket["status"])
    print("release again", secops.check("deploy:release", host="prod.example.com")["verdict"])


async def main() -> None:
    async with AsyncSecopsClient() as s:
        print("async push", (await s.check("vcs:push", host="origin"))["verdict"])


asyncio.run(main())
