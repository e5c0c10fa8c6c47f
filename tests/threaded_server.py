"""A Flask app served by werkzeug on 127.0.0.1 in a daemon thread: the fake servers of the
unit tests (authorization servers, issuers) use it."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


def serve_in_thread(app: Flask) -> BaseWSGIServer:
    """Start serving `app` on a free loopback port; stop it with `stop(server)`."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    ).start()
    return server


def stop(server: BaseWSGIServer) -> None:
    server.shutdown()
    server.server_close()
