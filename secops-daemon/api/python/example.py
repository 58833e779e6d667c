"""The README's worked example: wrap tool calls with check and scan.

Run it as an agent:  secops run --agent coder -- python3 example.py
Prints one line per step, so a test can follow along.
"""

import subprocess
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from secops_client import Denied, SecopsClient  # noqa: E402

secops = SecopsClient()
print("whoami", secops.whoami()["agent"])


def run_tool(argv):
    """A tool call: asked about first, its output scanned before the model sees it."""
    return secops.guarded(
        "code:exec",
        lambda: subprocess.run(argv, capture_output=True, text=True).stdout,
        tool=argv[0],
        arguments=" ".join(argv),
    )


print("echo", run_tool(["echo", "key AKIAQ3EGRV7PLMNX5ZQW in the logs"]).strip())

try:
    secops.guarded("vcs:force_push", lambda: "never runs", tool="git",
                   arguments="git push --force")
    print("force_push allowed")
except Denied as e:
    print("force_push", e.decision["verdict"], e.decision["rule_id"])

decision = secops.check("deploy:release", host="prod.example.com")
print("release", decision["verdict"], "ticket" if decision["ticket"] else "no-ticket")
