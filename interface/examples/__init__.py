"""The example catalog (one skill, one credential) that the demo and ``serve`` load."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

_ROOT = files("interface.examples") / "catalog-events"


def catalog_event(name: str) -> dict[str, Any]:
    """One of ``skill-created``, ``credential-created``… as its CloudEvents JSON."""
    return json.loads((_ROOT / f"{name}.json").read_text())


def load_example_catalog(app: Any) -> tuple[str, str]:
    """Applies the example skill and credential to ``app``; returns (skill id, credential id)."""
    skill = catalog_event("skill-created")["data"]
    credential = catalog_event("credential-created")["data"]
    app.upsert_skill(skill_id=skill["id"], version=skill["version"], name=skill["name"],
                     description=skill["description"], status=skill["status"])
    app.upsert_credential(credential_id=credential["id"], version=credential["version"],
                          skill_id=credential["skill_id"], name=credential["name"],
                          description=credential["description"],
                          template=credential.get("workflow", {}).get("template"))
    return skill["id"], credential["id"]
