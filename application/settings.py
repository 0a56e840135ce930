"""One typed settings object, read from ``SKILLBASE_WORKFLOW_*`` environment variables.

Every default below is the embedded default: with no environment at all the service runs
on an embedded PostgreSQL under ``data_dir``, keeps files in a local directory, has no
Kafka link and no SMTP server. Production sets the variables it needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

PREFIX = "SKILLBASE_WORKFLOW_"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # Where the embedded PostgreSQL and the local file store live when nothing else is set.
    data_dir: str = ".skillbase"

    # PostgreSQL. An empty ``database_host`` means: start the embedded server.
    database_host: str = ""
    database_port: int = 5432
    database_name: str = "skillbase_workflow"
    database_user: str = "postgres"
    database_password: str = ""
    database_schema: str = ""
    database_pool_size: int = 8
    database_pool_max_overflow: int = 8

    # Files: the directory under which ``skillbase/workflow/<uuid>.<ext>`` lives.
    # Empty means ``<data_dir>/files``. In production: the path of a JuiceFS mount.
    files_root: str = ""
    # With ``files_root`` set, refuse to write unless it is a mount point (a JuiceFS volume
    # that is not mounted must be an outage, not a silently filling local disk).
    files_require_mount: bool = True
    files_max_bytes: int = 100 * 1024 * 1024
    # Files one instance may hold: each is an event that every load of the instance decodes.
    files_max_per_instance: int = 100
    files_allowed_types: tuple[str, ...] = (
        "image/jpeg",
        "image/png",
        "image/webp",
        "application/pdf",
        "video/mp4",
        "text/plain",
    )

    # Definition bundles.
    bundle_max_bytes: int = 1024 * 1024

    # Kafka. Empty ``kafka_bootstrap_servers`` means: no Kafka link.
    kafka_bootstrap_servers: str = ""
    kafka_output_topic: str = "skillbase.workflow"
    kafka_catalog_topics: tuple[str, ...] = ("skillbase.catalog",)
    kafka_dead_letter_topic: str = "skillbase.workflow.dead-letter"
    kafka_consumer_group: str = "skillbase-workflow"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_enable_idempotence: bool = True
    # The largest record batch a producer sends (aiokafka's ``max_request_size``): the relay
    # cuts its batches to it and stops at an event whose record is larger, with an error
    # naming it. Keep it at most the output topic's ``max.message.bytes``; raise both for
    # larger events.
    kafka_max_request_bytes: int = 1024 * 1024

    # SMTP. Empty ``smtp_host`` means: emails wait in the outbox.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "skillbase <no-reply@skillbase.invalid>"
    mail_templates_dir: str = ""
    # ``group=address,group=address``: where ``to_group`` emails go.
    group_addresses: tuple[str, ...] = ()

    # Background workers (mail worker, scheduler): how often each looks for work.
    worker_poll_ms: int = 1000
    # A message delivered before any instance waits for it is kept this long (7 days).
    message_keep_seconds: int = 7 * 24 * 3600

    # Read models: under load, each projection applies at most one batch per interval, so
    # busy logs are applied in batches (at most this much later than at once). Against
    # 50 ms, 100 ms measured ~30 % less projection and ~17 % less PostgreSQL CPU per
    # process (ADR 0005).
    projections_batch_interval_ms: int = 100

    # HTTP.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # API worker processes on the one port (replicas on one host: every role in each of
    # them is safe, ADR 0006); 1 serves in this process.
    http_workers: int = 1
    # Worker threads per API process for commands and entity reads (eventsourcing is
    # synchronous). Few: the work is mostly CPU under one GIL, and every thread more was
    # measured slower (ADR 0006). Read-model lists have their own threads, one per connection
    # of the read pool (``database_pool_size``), so a list waiting for a log position never
    # holds up a command.
    http_command_threads: int = 4
    load_example_catalog: bool = True

    # Identity. With neither key set the service runs with a development HS256 key.
    jwt_hs256_secret: str = ""
    jwt_public_key: str = ""
    jwt_audience: str = "skillbase"
    jwt_issuer: str = ""
    admin_group: str = "admin"

    @property
    def embedded_database(self) -> bool:
        return not self.database_host

    @property
    def files_directory(self) -> Path:
        return Path(self.files_root) if self.files_root else Path(self.data_dir) / "files"

    @property
    def kafka_enabled(self) -> bool:
        return bool(self.kafka_bootstrap_servers)

    def group_address_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.group_addresses if "=" in item)
        from domain.identity import group_key  # the same comparison as everywhere else

        return {group_key(group): address.strip() for group, address in pairs}

    def redacted(self) -> dict[str, object]:
        """The settings as a dict with every secret masked, safe to log."""
        secret = ("password", "secret", "private")
        return {
            name: ("***" if any(word in name for word in secret) and value else value)
            for name, value in msgspec.structs.asdict(self).items()
        }


def _convert(raw: str, annotation: object) -> object:
    if annotation is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if annotation is int:
        return int(raw)
    if str(annotation).startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Builds settings from ``SKILLBASE_WORKFLOW_*`` variables, then ``overrides``."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    hints = {field.name: field.type for field in msgspec.structs.fields(Settings)}
    for name, annotation in hints.items():
        raw = environ.get(PREFIX + name.upper())
        if raw is not None:
            try:
                values[name] = _convert(raw, annotation)
            except ValueError as error:
                raise ValueError(f"{PREFIX}{name.upper()}: {error}") from None
    values.update(overrides)
    return msgspec.convert(values, Settings)
