"""`marco-eval judge serve`: the rating page and its JSON API on the standard library's HTTP server.

    GET  /                       the page (static/judge.html: all text goes in through textContent)
    GET  /api/sheet              items: source, reference, candidates (ids and text; never systems)
    GET  /api/state?rater=NAME   that rater's ratings and position, to resume after a reload
    POST /api/rate               {rater, item_id, cand_id, aspect, score (1-5, or null to clear)}
    POST /api/position           {rater, item_index}

Every POST is committed to the store before it is answered. The key file is never read here,
so nothing the server can send names a system. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from marco_eval.judge import JudgeError
from marco_eval.judge.export import load_sheet
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


def make_server(sheet_path: Path, db_path: Path | None = None, port: int = 0,
                quiet: bool = True) -> tuple[ThreadingHTTPServer, RatingStore]:
    sheet = load_sheet(sheet_path)
    store = RatingStore(db_path or default_db_path(sheet_path), sheet)
    handler = type("BoundJudgeHandler", (JudgeHandler,), {
        "store": store, "quiet": quiet, "page": PAGE.read_bytes(),
        "sheet_json": json.dumps(public_sheet(sheet), ensure_ascii=False).encode()})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        store.close()
        raise JudgeError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}): pick another --port, or 0 for any free one") from None
    server.daemon_threads = True
    return server, store


def serve(sheet_path: Path, db_path: Path | None = None, port: int = 0, quiet: bool = True) -> None:
    server, store = make_server(sheet_path, db_path, port, quiet)
    host, bound_port = server.server_address[:2]
    n_items = len(json.loads(server.RequestHandlerClass.sheet_json)["items"])
    print(f"judge: {n_items} items, ratings in {store.path}", flush=True)
    print(f"judge: serving http://{host}:{bound_port}/  (Ctrl-C stops; add ?rater=NAME to the URL)", flush=True)
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
