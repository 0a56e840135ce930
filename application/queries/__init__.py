"""Query functions over the read models, for the HTTP API and the CLI.

Every list takes ``limit`` and an opaque ``cursor`` and returns a ``Page``; every query
takes ``wait_for`` (a notification id, e.g. the log head right after a command) and
waits, bounded by ``timeout``, until its read model has caught up with it.
Visibility is the caller's: pass the user id and groups the token carries.
"""
