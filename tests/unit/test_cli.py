"""The command line's answers to what an operator mends: a bad option, a bad setting, a
database that does not answer: one line and an exit status, never a traceback."""

from __future__ import annotations

import pytest

from interface.cli import main


def test_an_unknown_log_level_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["--log-level", "bogus", "token", "--user", "x"])
    assert ended.value.code == 2
    assert "invalid choice: 'BOGUS'" in capsys.readouterr().err


def test_every_logging_level_name_is_accepted_in_any_case(monkeypatch) -> None:
    monkeypatch.setenv("SKILLBASE_WORKFLOW_WORKER_POLL_MS", "abc")  # the command then ends at once
    for level in ("debug", "INFO", "Warning", "error", "critical"):
        if level == "debug":
            continue  # shows the traceback instead (below)
        assert main(["--log-level", level, "timers", "run"]) == 1


def test_a_bad_setting_is_one_line_naming_it(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SKILLBASE_WORKFLOW_WORKER_POLL_MS", "abc")
    assert main(["timers", "run"]) == 1
    err = capsys.readouterr().err
    assert "SKILLBASE_WORKFLOW_WORKER_POLL_MS" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_housekeeping_with_the_database_down_is_one_line_and_exit_1(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("SKILLBASE_WORKFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SKILLBASE_WORKFLOW_DATABASE_HOST", "127.0.0.1")
    monkeypatch.setenv("SKILLBASE_WORKFLOW_DATABASE_PORT", "1")  # nothing listens there
    monkeypatch.setenv("SKILLBASE_WORKFLOW_DATABASE_PASSWORD", "s3cret-never-printed")
    assert main(["files", "housekeeping"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "s3cret-never-printed" not in err


def test_debug_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setenv("SKILLBASE_WORKFLOW_WORKER_POLL_MS", "abc")
    with pytest.raises(ValueError, match="WORKER_POLL_MS"):
        main(["--log-level", "debug", "timers", "run"])
