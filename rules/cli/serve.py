"""``dacp serve`` (the HTTP service) and ``dacp service-token`` (make a token and the hash to configure).

Registered by ``rules.cli.run`` (``register``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from rules.cli.common import settings_from_args
from rules.errors import InputError


def register(subparsers: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Callable]:
    p = subparsers.add_parser("serve", help="HTTP service: eligibility, decisions, audit, policy reload (docs/service.md)")
    p.add_argument("--host", help="address to listen on (default: [service] host, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: [service] port, else 8080)")
    p.add_argument("--openapi", metavar="FILE", help="write the OpenAPI document to FILE ('-' for stdout) and exit; "
                   "regenerate the committed one with: dacp serve --openapi docs/openapi.json")
    add_common(p)

    t = subparsers.add_parser("service-token", help="make a new bearer token for dacp serve and print its sha256 "
                              "entry for the tokens file (or hash a token read from stdin)")
    t.add_argument("--name", required=True, help="who holds the token (shown in logs), e.g. clearing-house-a")
    t.add_argument("--role", required=True, choices=("clearing", "auditor", "compliance"))
    t.add_argument("--stdin", action="store_true", help="hash the token read from stdin instead of making one")
    return {"serve": cmd_serve, "service-token": cmd_token}


def cmd_token(args: argparse.Namespace) -> int:
    from rules.http.auth import hash_token, new_token  # here, not at the top: for start-up time (FastAPI loads)

    if args.stdin:
        token = sys.stdin.readline().strip()
        if len(token) < 32:
            raise InputError("a token must be at least 32 characters (use one this command makes)", "stdin")
    else:
        token = new_token()
        print(f"# the token (give it to {args.name}; it is not stored anywhere, and cannot be recovered):",
              file=sys.stderr)
        print(token, file=sys.stderr)
    print(f'[[token]]\nname = "{args.name}"\nrole = "{args.role}"\nsha256 = "{hash_token(token)}"')
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # the HTTP door and uvicorn are imported here, not at the top: for start-up time (FastAPI, pydantic and
    # uvicorn load in about a second; every other dacp command goes without them)
    from rules.http.app import create_app, openapi_document
    from rules.http.auth import ROLES
    from rules.http.config import service_config
    from rules.http.protocols import guarded
    from rules.http.logs import configure_logging, event

    if args.openapi:
        text = openapi_document()
        if args.openapi == "-":
            sys.stdout.write(text)
        else:
            Path(args.openapi).write_text(text, encoding="utf-8")
            print(f"OpenAPI document written to {args.openapi}", file=sys.stderr)
        return 0
    import uvicorn

    settings = settings_from_args(args)
    config = service_config(settings)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    if not 0 <= port <= 65535:
        raise InputError("must be from 0 to 65535", "--port")
    configure_logging()
    app = create_app(settings, config)  # loads, validates and compiles the bundle: an invalid one stops here
    event(logging.INFO, "starting", event="start", host=host, port=port, bundle=app.state.service.active.hash,
          log=str(settings.log), tokens={r: sum(t.role == r for t in config.tokens) for r in ROLES})
    if not config.tokens:
        event(logging.WARNING, "no tokens configured: every protected endpoint answers 401", event="no_tokens")
    import gc
    gc.freeze()  # the loaded bundle, compiled rules and imports: never traversed by a collection again (tail latency)
    sys.setswitchinterval(0.001)  # the loop gets the GIL back from the decision worker within 1 ms, not 5 (tail)
    # one process: durable_rules' host is process-wide; decisions run on one worker thread inside it
    sec = settings.service  # [service] bounds on idle, slow and too many clients (rules.settings.ServiceSettings)
    uvicorn.run(app, host=host, port=port, workers=1, log_config=None, access_log=False, server_header=False,
                timeout_keep_alive=sec.timeout_keep_alive_s, limit_concurrency=sec.limit_concurrency,
                backlog=sec.backlog, h11_max_incomplete_event_size=sec.max_incomplete_event_bytes,
                timeout_graceful_shutdown=sec.graceful_shutdown_s,
                loop=sec.loop, http=guarded(sec.http, sec.header_timeout_s, sec.body_timeout_s,
                                            sec.max_incomplete_event_bytes))  # read deadlines (rules.http.deadlines)
    return 0
