"""The daemon's answers, as typed dictionaries (see secops-daemon/api/openapi.yaml)."""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, TypedDict

Verdict = Literal["allow", "deny", "escalate"]
Risk = Literal["low", "medium", "high", "critical"]
TicketStatus = Literal["open", "approved", "denied"]


class Decision(TypedDict):
    """What /v1/check answers."""

    verdict: Verdict
    risk: Risk
    rule_id: Optional[str]
    reason: str
    agent: Optional[str]
    ticket: Optional[int]
    audit_seq: Optional[int]


class ScanResult(TypedDict):
    """What /v1/scan answers: the output to use (None when withheld)."""

    output: Optional[str]
    action: Literal["clean", "redacted", "withheld", "logged-only"]
    findings: Dict[str, int]
    agent: Optional[str]


class Whoami(TypedDict, total=False):
    role: str
    agent: Optional[str]
    uid: int
    pid: Optional[int]


class Ticket(TypedDict):
    """An approval ticket (/v1/tickets/{id}, /v1/approvals)."""

    id: int
    agent: str
    action: str
    object: str
    risk: Risk
    rule_id: Optional[str]
    reason: str
    source: str
    status: TicketStatus
    first_seen_ns: int
    last_seen_ns: int
    count: int
    decided_by: Optional[str]
    decided_at_ns: Optional[int]
    decision_reason: Optional[str]
    grant_until_ns: Optional[int]
    grant_once: bool
    object_inode: Optional[List[int]]
    command: Optional[str]
