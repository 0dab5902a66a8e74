"""``justpipe dashboard``: serve the web dashboard over the run store.

Binds 127.0.0.1 by default. Any other ``--host`` prints a warning and requires an
access token (``--token``, or a random one that is printed in the URL). Prints the
URL once the server is listening, then opens a browser unless ``--no-open``.
Without the dashboard extra it prints the install hint and exits 1.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
import threading
import webbrowser
from typing import Any

from justpipe.cli.formatting import EXIT_FAILURE, EXIT_OK
from justpipe.cli.registry import PipelineRegistry, open_registry

__all__ = ["DASHBOARD_DEPENDENCIES", "dashboard_command"]

DASHBOARD_DEPENDENCIES = ("starlette", "uvicorn", "jinja2")
DEFAULT_HOST = "127.0.0.1"
ANY_HOST = "*"


def dashboard_command(
    registry: PipelineRegistry,
    port: int = 8741,
    no_open: bool = False,
    host: str = DEFAULT_HOST,
    token: str | None = None,
) -> int:
    """Serve the dashboard until interrupted; returns the exit status."""
    missing = [name for name in DASHBOARD_DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        print("Dashboard requires extra dependencies. Install with:")
        print('  pip install "justpipe[dashboard]"')
        return EXIT_FAILURE

    import uvicorn

    from justpipe.dashboard.api import STORE_TIMEOUT_S
    from justpipe.dashboard.security import LOOPBACK_NAMES, is_loopback
    from justpipe.dashboard.server import create_app

    allowed: set[str] = set(LOOPBACK_NAMES)
    if not is_loopback(host):
        token = token or secrets.token_urlsafe(24)
        print(
            f"Warning: serving on {host}, reachable from other machines. Every request "
            "needs the access token in the URL below; anyone with it can read your runs "
            "and delete them.",
            file=sys.stderr,
        )
        allowed = {ANY_HOST}  # the token guards; clients may use any name for this host
    # stores that another process holds locked are reported fast, not waited for
    pages_registry = open_registry(registry.location, timeout=STORE_TIMEOUT_S)
    app = create_app(pages_registry, token=token, allowed_hosts=allowed)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    announcer = threading.Thread(target=_announce, args=(server, host, token, no_open), daemon=True)
    announcer.start()
    try:
        server.run()
    except SystemExit:  # uvicorn exits (status 3) when it cannot bind
        print(f"Error: the dashboard could not listen on {host}:{port}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    finally:
        pages_registry.close()
    if not server.started:
        print(f"Error: the dashboard could not listen on {host}:{port}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _announce(server: Any, host: str, token: str | None, no_open: bool) -> None:
    """Wait until uvicorn listens, then print the URL (and open it)."""
    while not server.started:
        if server.should_exit:
            return
        threading.Event().wait(0.02)
    port = _bound_port(server)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}/"
    if token:
        url += f"?token={token}"
    print(f"justpipe dashboard listening on {url}", flush=True)
    print("Press Ctrl+C to stop.", flush=True)
    if not no_open:
        webbrowser.open(url)


def _bound_port(server: Any) -> int:
    for listener in getattr(server, "servers", []):
        for sock in getattr(listener, "sockets", []):
            address = sock.getsockname()
            return int(address[1])
    return int(server.config.port)
