"""``skillbase-workflow demo``: the main job, end to end, on the configured store.

Loads the example skill and credential (whose definition is the built-in template), runs
one learner to pass and one to fail, and prints the ``SKILLBASE_WORKFLOW_*`` events
this run stored, read back from the event store.
"""

from __future__ import annotations

import argparse
from typing import Any
from uuid import UUID

from application.bootstrap import bootstrap, open_file_store
from application.contract import EntityStates, to_cloudevent

from application.settings import load_settings
from domain.identity import Actor
from interface.examples import load_example_catalog

EVIDENCE = b"Photo description: a 6 mm fillet weld on mild steel, even bead, no porosity.\n"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the example credential to pass and to fail, print the events")
    parser.set_defaults(handler=run)


def run(_args: argparse.Namespace) -> int:
    settings = load_settings()
    app = bootstrap(settings)
    files = open_file_store(settings)
    first = app.recorder.max_notification_id() or 0
    _skill_id, credential_id = load_example_catalog(app)
    assessor = Actor.of("assessor-ada", "assessor", email="ada@example.org")
    passed = _run_learner(app, files, Actor.of("learner-lin", email="lin@example.org"), assessor, credential_id, 85)
    failed = _run_learner(app, files, Actor.of("learner-sam", email="sam@example.org"), assessor, credential_id, 40)
    print(_table(app, first))
    for label, instance_id in (("pass path", passed), ("fail path", failed)):
        instance = app.get_instance(instance_id)
        print(f"{label}: instance {instance_id} is {instance.status}, result {instance.result}")
    return 0


def _run_learner(app: Any, files: Any, learner: Actor, assessor: Actor, credential_id: str, score: int) -> UUID:
    instance_id = app.start_instance(learner, credential_id)
    stored = files.write([EVIDENCE], "text/plain")
    app.attach_file(learner, instance_id, file_id=stored.file_id, extension=stored.extension,
                    media_type=stored.media_type, size=stored.size, sha256=stored.sha256, name="weld-photo-notes.txt")
    submit = _open_task(app, instance_id)
    app.complete_task(learner, submit, {
        "statement": "My fillet weld on 6 mm mild steel, photographed after cleaning.",
        "evidence_files": [str(stored.file_id)],
    })
    assess = _open_task(app, instance_id)
    app.claim_task(assessor, assess)
    app.complete_task(assessor, assess, {"score": score, "feedback": "Reviewed against the level 2 standard."})
    observe = _open_task(app, instance_id)
    app.claim_task(assessor, observe)
    app.complete_task(assessor, observe, {})
    return instance_id


def _open_task(app: Any, instance_id: UUID) -> UUID:
    (task,) = app.get_instance(instance_id).open_tasks
    return task


def _table(app: Any, after: int) -> str:
    states = EntityStates(app.repository)
    rows = [("#", "time (UTC)", "type", "subject", "what happened")]
    for notification in app.recorder.select_notifications(start=after + 1, limit=10_000):
        event = app.mapper.to_domain_event(notification)
        cloudevent = to_cloudevent(event, states.after(event), notification.id)
        rows.append((
            str(notification.id),
            cloudevent.time[11:23],
            cloudevent.type,
            cloudevent.subject.split("/")[0] + "/" + cloudevent.subject.split("/")[1][:8],
            _summary(cloudevent.data["change"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-" * min(160, max(len(line) for line in lines)))
    return "\n".join(lines)


def _summary(change: dict[str, Any]) -> str:
    fact = change["fact"]
    details = {
        "Started": lambda c: f"user {c['user_id']} starts credential {c['credential_id'][:8]} v{c['definition_version']}",
        "Created": lambda c: c.get("name") or c.get("skill_id", ""),
        "Claimed": lambda c: f"by {c['by']}",
        "Completed": lambda c: f"by {c['by']}" if "by" in c else f"result {c.get('result')} at {c.get('end_element_id')}",
        "Advanced": lambda c: f"{c['cause']}; opened {len(c['opened_tasks'])}, closed {len(c['closed_tasks'])}"
        + "".join(f"; email {m['payload'].get('template')}" for m in c["messages"] if isinstance(m.get("payload"), dict)),
        "FileAttached": lambda c: f"{c['file']['name']} ({c['file']['size']} bytes)",
        "VersionAdded": lambda c: f"version {c['number']} of {c['process_id']}",
        "DefinitionPinned": lambda c: f"credential {c['credential_id'][:8]} -> v{c['version']}",
        "CatalogUpdated": lambda c: f"catalog v{c['catalog_version']}: {c.get('status', c.get('name'))}",
    }.get(fact, lambda c: "")
    return f"{fact}: {details(change)}"
