"""Tornado with fork_processes: every child logs through the parent's listener.

Run:  python examples/tornado/server.py [PORT] [LOGFILE]   (Ctrl-C or SIGTERM to stop)

mplog.setup() goes before fork_processes(); children (and the ones tornado
restarts after a crash) are wired by mplog's at-fork hook. On SIGTERM the
parent forwards the signal to its children, they stop cleanly, and
fork_processes() exits the parent, which drains the listener.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.process
import tornado.web

import mplog

WORKERS = 3
log = logging.getLogger("app")


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        rid = self.get_argument("rid", "-")
        log.info("app rid=%s pid=%d", rid, os.getpid())
        self.write(f"ok {rid}\n")


def _forward_to_children(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)


def _stop_child(signum: int, frame: object) -> None:
    loop = tornado.ioloop.IOLoop.current()
    loop.add_callback_from_signal(loop.stop)


def main(port: int, path: str) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
    os.setpgrp()  # our own process group, so SIGTERM can be forwarded to the children
    with mplog.setup(handler, level="INFO"):
        logging.getLogger("server").info("listening on port %d", sockets[0].getsockname()[1])
        signal.signal(signal.SIGTERM, _forward_to_children)
        signal.signal(signal.SIGINT, _forward_to_children)
        tornado.process.fork_processes(WORKERS, max_restarts=100)  # returns only in children
        signal.signal(signal.SIGTERM, _stop_child)
        signal.signal(signal.SIGINT, _stop_child)
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Hello)]))
        server.add_sockets(sockets)
        tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000, sys.argv[2] if len(sys.argv) > 2 else "tornado.log")
