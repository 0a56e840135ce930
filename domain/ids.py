"""Deterministic ids where the key is natural (uuid5), random ones elsewhere."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = UUID("6f1d1f0e-8a7c-5b8e-9d3a-5b1c0e2f4a61")
_DEFINITION = uuid5(NAMESPACE, "definition")
_DEPLOYMENT = uuid5(NAMESPACE, "deployment")
_TASK = uuid5(NAMESPACE, "task")
_COMMAND = uuid5(NAMESPACE, "command")


def definition_id(credential_id: str) -> UUID:
    """One definition per catalog credential."""
    return uuid5(_DEFINITION, str(credential_id))


def deployment_id(skill_id: str) -> UUID:
    """One deployment per catalog skill."""
    return uuid5(_DEPLOYMENT, str(skill_id))


def task_id(instance_id: UUID, engine_task_id: str) -> UUID:
    """One task aggregate per engine task of an instance."""
    return uuid5(_TASK, f"{instance_id}/{engine_task_id}")


def command_id(scope: str, idempotency_key: str) -> UUID:
    """The id an idempotent command creates, from its caller's key. Build ``scope`` with
    ``scope_part`` for anything a caller chose, so that no two scopes and keys spell the
    same text."""
    return uuid5(_COMMAND, f"{scope}/{idempotency_key}")


def scope_part(text: str) -> str:
    """``text`` as one part of a ``/``-separated scope: ``%`` and ``/`` percent-encoded (a
    user ``org`` with key ``alice/K`` and a user ``org/alice`` with key ``K`` would
    otherwise name the same id). Text without either is unchanged, and so are its ids."""
    return text.replace("%", "%25").replace("/", "%2F")
