"""The one exception of record-level cleaning: a record is quarantined with a named reason."""

from __future__ import annotations

from chatsft.errors import UserError


class Reject(UserError):
    """A record the clean stage quarantines: `reason` is a stable name, `detail` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
