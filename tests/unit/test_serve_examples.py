"""Replicas or worker processes starting together on an empty store all load the example
catalog; each lost race (a Conflict) means another saved part of it, so loading again ends."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from application.settings import load_settings
from domain.errors import Conflict
from interface.commands import serve


def _empty_store() -> Any:
    return SimpleNamespace(recorder=SimpleNamespace(max_notification_id=lambda: None))


def _loader(conflicts: int, calls: list[int]) -> Any:
    def load(_service: Any) -> tuple[str, str]:
        calls.append(1)
        if len(calls) <= conflicts:
            raise Conflict("someone else changed this at the same moment")
        return "skill", "credential"
    return load


def test_lost_races_are_loaded_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    calls: list[int] = []
    monkeypatch.setattr(serve, "load_example_catalog", _loader(2, calls))  # skill lost, then credential
    serve._load_examples(load_settings({}, data_dir=str(tmp_path)), _empty_store())
    assert len(calls) == 3


def test_a_conflict_that_never_ends_is_raised(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    calls: list[int] = []
    monkeypatch.setattr(serve, "load_example_catalog", _loader(99, calls))
    with pytest.raises(Conflict):
        serve._load_examples(load_settings({}, data_dir=str(tmp_path)), _empty_store())
    assert len(calls) == serve.EXAMPLE_ATTEMPTS


def test_a_store_with_events_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    calls: list[int] = []
    monkeypatch.setattr(serve, "load_example_catalog", _loader(0, calls))
    store = SimpleNamespace(recorder=SimpleNamespace(max_notification_id=lambda: 7))
    serve._load_examples(load_settings({}, data_dir=str(tmp_path)), store)
    assert calls == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example.org"])
def test_serve_refuses_the_development_key_off_loopback(tmp_path: Any, host: str) -> None:
    """It printed live 12-hour tokens, an admin's among them, for a public address."""
    settings = load_settings({}, data_dir=str(tmp_path), http_host=host)
    with pytest.raises(SystemExit, match="development key serves only a loopback address"):
        serve.refuse_development_key_off_loopback(settings)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_serve_keeps_the_development_key_on_loopback_and_any_address_with_a_key(tmp_path: Any, host: str) -> None:
    serve.refuse_development_key_off_loopback(load_settings({}, data_dir=str(tmp_path), http_host=host))
    keyed = load_settings({}, data_dir=str(tmp_path), http_host="0.0.0.0", jwt_hs256_secret="s" * 32)
    serve.refuse_development_key_off_loopback(keyed)
