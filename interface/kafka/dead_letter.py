"""A record that could not be handled, ready for the dead-letter topic.

The original value and headers are kept byte for byte; ``dlq_*`` headers say where the
record came from and why it was set aside. Send it under the original key. A record too big
for the dead-letter topic goes without its value (``without_value``): ``dlq_value_bytes``
says how big it was, and the original is still at its topic, partition and offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

DLQ_HEADERS = ("dlq_reason", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_at", "dlq_value_bytes")
MAX_REASON_BYTES = 4096


def dead_letter_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    reason: str,
    *,
    at: datetime | None = None,
    without_value: bool = False,
) -> tuple[bytes | None, list[tuple[str, bytes | None]]]:
    """Returns ``(value, headers)``; produce them under the original ``key`` unchanged.

    ``dlq_*`` headers already on the record (one replayed from the dead-letter topic)
    are replaced, so each record says only why it failed last.
    """
    at = at or datetime.now(UTC)
    kept = [(name, raw) for name, raw in headers if name not in DLQ_HEADERS]
    if without_value:
        kept.append(("dlq_value_bytes", str(len(value or b"")).encode("ascii")))
        reason = f"{reason} (the value was too big for the dead-letter topic and is left out)"
        value = None
    # Cut to a bound without splitting a UTF-8 sequence.
    reason_bytes = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
    reason_bytes = reason_bytes.decode("utf-8", "ignore").encode("utf-8")
    return value, kept + [
        ("dlq_reason", reason_bytes),
        ("dlq_topic", topic.encode("utf-8")),
        ("dlq_partition", str(partition).encode("ascii")),
        ("dlq_offset", str(offset).encode("ascii")),
        (
            "dlq_at",
            at.astimezone(UTC).isoformat().replace("+00:00", "Z").encode("ascii"),
        ),
    ]
