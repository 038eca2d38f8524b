"""`python -m dot_provider --port 0`: migrate a fresh sqlite DB, serve, print `listening on URL`.

A threaded WSGI server from the standard library: one slow token request never blocks others.
"""

from __future__ import annotations

import argparse
import os
import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of connections (SYN retried after 1 s)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", required=True, help="sqlite file (created and migrated)")
    args = parser.parse_args()
    os.environ["DOT_PROVIDER_DB"] = args.db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dot_provider.settings")
    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    server = make_server(
        args.host, args.port, get_wsgi_application(), ThreadingWSGIServer, QuietHandler
    )
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()  # until SIGTERM


if __name__ == "__main__":
    main()
