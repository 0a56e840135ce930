"""Mail templates: Jinja2, sandboxed, with an optional directory that overrides the defaults.

A template ``<name>`` is three files: ``<name>.subject.txt``, ``<name>.txt`` and
``<name>.html``. Each file is looked up in the override directory first, then among the
defaults shipped in ``application/mail/templates/``. Override directories may be supplied
by admins, so templates run in Jinja's sandbox and HTML output is autoescaped.

Context keys the defaults use: ``credential_name``, ``learner_email``, ``learner_id``,
``instance_id``, ``outcome``, ``task_name``, ``data`` (the workflow data).
"""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from domain.errors import InvalidInput, Problem

DEFAULTS_DIR = Path(__file__).parent / "templates"
PARTS = ("subject.txt", "txt", "html")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class MailTemplates:
    def __init__(self, override_dir: str | None = None) -> None:
        loaders = [FileSystemLoader(override_dir)] if override_dir else []
        loaders.append(FileSystemLoader(DEFAULTS_DIR))
        self._env = ImmutableSandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
        )

    def render(self, template_name: str, context: dict) -> tuple[str, str, str]:
        """Renders ``(subject, text, html)``; the subject is folded onto one line."""
        if not _NAME.fullmatch(template_name):  # it may be computed from learner data: not repeated
            raise InvalidInput("the mail template name is not a plain name (letters, digits, '_', '-')")
        subject, text, html = (
            self._render_file(f"{template_name}.{part}", template_name, context) for part in PARTS
        )
        return " ".join(subject.split()), text, html

    def _render_file(self, filename: str, template_name: str, context: dict) -> str:
        try:
            return self._env.get_template(filename).render(context)
        except TemplateNotFound as error:
            raise InvalidInput(
                f"unknown mail template {template_name!r}",
                [Problem(path=str(error.name or filename), message="no such template file")],
            ) from None
        except TemplateSyntaxError as error:
            raise InvalidInput(
                f"mail template {template_name!r} does not parse",
                [Problem(path=filename, message=error.message or str(error), line=error.lineno)],
            ) from None
        except TemplateError as error:  # undefined values, sandbox refusals
            raise InvalidInput(
                f"mail template {template_name!r} cannot be rendered",
                [Problem(path=filename, message=str(error))],
            ) from None
