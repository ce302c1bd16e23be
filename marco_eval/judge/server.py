"""`marco-eval judge serve`: the rating page and its JSON API on the standard library's HTTP server.

    GET  /                       the page (static/judge.html: all text goes in through textContent)
    GET  /api/sheet              items: source, reference, candidates (ids and text; never systems)
    GET  /api/state?rater=NAME   that rater's ratings and position, to resume after a reload
    POST /api/rate               {rater, item_id, cand_id, aspect, score (1-5, or null to clear)}
    POST /api/position           {rater, item_index}

Every POST is committed to the store before it is answered. The key file is never read here,
so nothing the server can send names a system. Binds 127.0.0.1 unless --host says otherwise;
listening beyond this machine prints a one-line warning (no password, plain HTTP).
"""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import sqlite3
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from marco_eval.judge import JudgeError
from marco_eval.judge.export import legacy_key_path, load_sheet
from marco_eval.judge.store import RatingStore, default_db_path

PAGE = Path(__file__).resolve().parent / "static" / "judge.html"
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'",
    "Cache-Control": "no-store",
}


def public_sheet(sheet: dict) -> dict:
    """What a rater's browser receives: exactly the blind fields, nothing else from the file."""
    items = [{"item_id": it["item_id"], "source": it["source"], "reference": it.get("reference"),
              "candidates": [{"cand_id": c["cand_id"], "text": c["text"]} for c in it["candidates"]]}
             for it in sheet["items"]]
    return {"sheet_id": sheet["sheet_id"], "task": sheet.get("task"), "items": items,
            "has_reference": any(it["reference"] for it in items)}


class JudgeHandler(BaseHTTPRequestHandler):
    store: RatingStore  # set on the subclass make_handler builds
    sheet_json: bytes
    page: bytes
    quiet = True

    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        if url.path == "/api/sheet":
            return self._send(HTTPStatus.OK, self.sheet_json, "application/json")
        if url.path == "/api/state":
            rater = parse_qs(url.query).get("rater", [""])[0]
            return self._answer(lambda: self.store.rater_state(rater))
        self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

    def do_POST(self):  # noqa: N802
        routes = {"/api/rate": self._rate, "/api/position": self._position}
        route = routes.get(urlsplit(self.path).path)
        if route is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            return self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "a POST needs a Content-Length"})
        length = int(length)
        if length > MAX_BODY:
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request body too large"})
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "request body is not JSON"})
        if not isinstance(body, dict):
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "request body must be a JSON object"})
        self._answer(lambda: route(body))

    def _rate(self, body: dict) -> dict:
        self.store.set_rating(body.get("rater"), body.get("item_id"), body.get("cand_id"),
                              body.get("aspect"), body.get("score"))
        return {"ok": True}

    def _position(self, body: dict) -> dict:
        self.store.set_position(body.get("rater"), body.get("item_index"))
        return {"ok": True}

    def _answer(self, work) -> None:
        try:
            self._json(HTTPStatus.OK, work())
        except JudgeError as e:  # the request is wrong: the page drops it and says why
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except sqlite3.Error as e:  # the disk is: the page keeps the rating and retries
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"ratings store: {e}"})

    def _json(self, status: HTTPStatus, doc: dict) -> None:
        self._send(status, json.dumps(doc, ensure_ascii=False).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        if not self.quiet:
            super().log_message(format, *args)


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True


class JudgeServer6(JudgeServer):
    address_family = socket.AF_INET6


def make_server(sheet_path: Path, db_path: Path | None = None, port: int = 0,
                quiet: bool = True, host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, RatingStore]:
    sheet = load_sheet(sheet_path)
    store = RatingStore(db_path or default_db_path(sheet_path), sheet)
    handler = type("BoundJudgeHandler", (JudgeHandler,), {
        "store": store, "quiet": quiet, "page": PAGE.read_bytes(),
        "sheet_json": json.dumps(public_sheet(sheet), ensure_ascii=False).encode()})
    try:
        server = (JudgeServer6 if ":" in host else JudgeServer)((host, port), handler)
    except OSError as e:
        store.close()
        raise JudgeError(f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --host or --port "
                         "(--port 0 takes any free one)") from None
    return server, store


def is_local(address: str) -> bool:
    """Whether only this machine can connect: a loopback address."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _outward_address(family: int) -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), else None."""
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"  # documentation ranges
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def url_to_open(server: ThreadingHTTPServer) -> str:
    """The URL raters open: the bound address, or for a wildcard one (0.0.0.0, ::) this machine's."""
    address, port = server.server_address[:2]
    if ipaddress.ip_address(address.split("%")[0]).is_unspecified:
        address = _outward_address(server.address_family) or socket.gethostname()
    shown = f"[{address}]" if ":" in address else address
    return f"http://{shown}:{port}/"


def serve(sheet_path: Path, db_path: Path | None = None, port: int = 0, quiet: bool = True,
          host: str = "127.0.0.1") -> None:
    server, store = make_server(sheet_path, db_path, port, quiet, host)
    address, bound_port = server.server_address[:2]
    n_items = len(json.loads(server.RequestHandlerClass.sheet_json)["items"])
    print(f"judge: {n_items} items, ratings in {store.path}", flush=True)
    if legacy_key_path(sheet_path).exists():
        print(f"judge: warning: the unblinding key {legacy_key_path(sheet_path)} sits beside the sheet; move it "
              "out of that folder (e.g. to judge-keys/) so it never travels with the sheet", file=sys.stderr, flush=True)
    if not is_local(address):
        print(f"judge: warning: listening on {address}:{bound_port}, beyond this machine: anyone who can reach it "
              "can read the sheet and rate under any name (no password, plain HTTP); --host 127.0.0.1 keeps it local",
              file=sys.stderr, flush=True)
    print(f"judge: serving {url_to_open(server)}  (Ctrl-C stops; add ?rater=NAME to the URL)", flush=True)
    # SIGTERM stops like Ctrl-C; shutdown() must come from another thread than serve_forever's.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
        print("judge: stopped; every answered rating is in the store", file=sys.stderr, flush=True)
