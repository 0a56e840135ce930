"""The HTTP API (Litestar): ``create_app(settings)``."""

from interface.http.app import create_app

__all__ = ["create_app"]
