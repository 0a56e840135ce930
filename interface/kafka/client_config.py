"""aiokafka keyword arguments from the one Settings object.

``enable_idempotence`` stays a setting: real Kafka wants it on; Tansu's in-memory build
(the test broker) rejects idempotent producers, so the tests turn it off.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from application.settings import Settings

CLIENT_ID = "skillbase-workflow"
_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **_common(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "max_request_size": settings.kafka_max_request_bytes,
    }


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Offsets are stored with each message's effect, never auto-committed by the client."""
    return {
        **_common(settings),
        "group_id": settings.kafka_consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }


def _common(settings: Settings) -> dict[str, Any]:
    servers = [
        s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()
    ]
    if not servers:
        raise ValueError(
            "SKILLBASE_WORKFLOW_KAFKA_BOOTSTRAP_SERVERS is empty: Kafka is off"
        )
    protocol = settings.kafka_security_protocol.strip().upper()
    if protocol not in _PROTOCOLS:
        raise ValueError(
            f"SKILLBASE_WORKFLOW_KAFKA_SECURITY_PROTOCOL: {protocol!r} is not one of "
            f"{', '.join(sorted(_PROTOCOLS))}"
        )
    config: dict[str, Any] = {
        "bootstrap_servers": servers,
        "client_id": CLIENT_ID,
        "security_protocol": protocol,
    }
    if protocol.endswith("SSL"):
        config["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None
        )
    if protocol.startswith("SASL"):
        mechanism = (settings.kafka_sasl_mechanism or "PLAIN").strip().upper()
        if mechanism not in _MECHANISMS:
            raise ValueError(
                f"SKILLBASE_WORKFLOW_KAFKA_SASL_MECHANISM: {mechanism!r} is not one of "
                f"{', '.join(sorted(_MECHANISMS))}"
            )
        config |= {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password,
        }
    return config
