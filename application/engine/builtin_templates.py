"""Built-in definition bundles: a credential created without a BPMN gets one of these.

``credential-assessment`` is the example process of ``shared/examples/bpmn``: the learner
submits evidence, an assessor assesses it and observes a demonstration, pass at 70.
"""

from __future__ import annotations

from importlib.resources import files

from domain.errors import InvalidInput, Problem

DEFAULT_TEMPLATE = "credential-assessment"
_ROOT = files("application.engine") / "templates"


def template_names() -> list[str]:
    return sorted(entry.name for entry in _ROOT.iterdir() if entry.is_dir())


def load_template(name: str = DEFAULT_TEMPLATE) -> dict[str, bytes]:
    if name not in template_names():
        raise InvalidInput(
            "unknown workflow template",
            [Problem("$.data.workflow.template", f"{name!r} is not one of {template_names()}")],
        )
    return {entry.name: entry.read_bytes() for entry in (_ROOT / name).iterdir() if entry.is_file()}
