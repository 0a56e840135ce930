#!/usr/bin/env python3
"""Turns the reliability suite's figures (JSON) into the tables of docs/reliability.md.

    SKILLBASE_RELIABILITY_FIGURES=/tmp/figures.json .venv/bin/pytest -m reliability
    .venv/bin/python scripts/reliability_report.py /tmp/figures.json > /tmp/tables.md

Without ``SKILLBASE_RELIABILITY_FIGURES`` the suite writes ``reliability-figures.json``
in pytest's base temporary directory.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(cell(v) for v in value)
    return str(value).replace("|", "\\|")


def crashes(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| test | fault | sent | acknowledged (2xx) | in flight, unanswered | acknowledged missing from store |"
             " duplicated instances | unexplained task states | read-model rows ≠ rebuild | Kafka events missing |"
             " Kafka events re-sent |", "|" + "---|" * 11]
    for r in records:
        before, after = r["commands_before_kill"], r["commands_after_restart"]
        lines.append(f"| {r['test']} | {r['fault']} | {before['sent'] + after['sent']} | {r['acknowledged_total']} |"
                     f" {before['unanswered']} | {r['acknowledged_missing_from_store']} | {r['duplicated_instances']} |"
                     f" {r['unexplained_task_states']} | {r['read_model_rows_differing_from_rebuild']} |"
                     f" {r['kafka_events_missing']} | {r['kafka_events_resent']} |")
    return lines


def generic(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| test | figures |", "|---|---|"]
    for r in records:
        figures = {k: v for k, v in r.items() if k not in ("test", "section")}
        lines.append(f"| {r['test']} | {cell(figures)} |")
    return lines


def main(path: str) -> int:
    data = json.loads(open(path).read())
    sections: dict[str, list[dict[str, Any]]] = {}
    for record in data["records"]:
        sections.setdefault(record["section"], []).append(record)
    out = [f"Figures from the run of {data['generated_at']}.", ""]
    titles = {"crashes": "Crashes", "replicas": "Several replicas", "dependencies": "Dependencies failing",
              "hostile": "Hostile input", "authorization": "Authorisation"}
    for section, title in titles.items():
        if section not in sections:
            continue
        out += [f"### {title}", ""]
        out += crashes(sections[section]) if section == "crashes" else generic(sections[section])
        out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
