"""The notification "service" both example changes call: a stand-in for an e-mail
or SMS API that sends each message once per idempotency key.

Not part of either change: it exists whichever way notifications are wired in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Notifications:
    """Messages sent, by idempotency key; sending a key again returns the first message."""

    sent: dict[str, dict[str, Any]] = field(default_factory=dict)

    def send(self, key: str, *, order_id: str, to: str, text: str) -> dict[str, Any]:
        """Send ``text`` to ``to`` about ``order_id`` once per ``key``; the message as sent."""
        if key not in self.sent:
            self.sent[key] = {"message_id": f"msg-{len(self.sent) + 1}", "order_id": order_id, "to": to, "text": text}
        return self.sent[key]

    def orders(self) -> set[str]:
        """The orders somebody was told about."""
        return {message["order_id"] for message in self.sent.values()}
