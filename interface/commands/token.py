"""``skillbase-workflow token --user U --groups G``: a development bearer token.

Only while the service runs with the development key (no ``JWT_HS256_SECRET`` and no
``JWT_PUBLIC_KEY`` configured); in production, tokens come from the identity provider.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from application.settings import load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("token", help="mint a development bearer token")
    parser.add_argument("--user", required=True, help="the token's sub (user id)")
    parser.add_argument("--groups", default="", help="comma-separated groups, e.g. assessor,admin")
    parser.add_argument("--email", default=None)
    parser.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds (default 12 h)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from interface.http.auth import mint_token

    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    try:
        token = mint_token(load_settings(), args.user, groups, args.email, args.ttl)
    except RuntimeError as error:
        print(f"skillbase-workflow token: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0
