"""Ratings on disk: one SQLite file per sheet, written before any request is answered.

Table `ratings` holds the current score, one row per (rater, item, candidate, aspect); the
last write wins. Table `events` is the append-only history of every change, so a changed
mind stays visible. `positions` remembers where each rater was. WAL mode with
synchronous=FULL: a rating whose POST was answered survives a killed server (and a power
cut). `meta.sheet_id` ties the file to one sheet, so ratings never land on another sheet's ids.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

from marco_eval.judge import JudgeError

ASPECTS = ("adequacy", "fluency")
SCORES = (1, 2, 3, 4, 5)
# Letters/digits of any script, then spaces . - _ @; short enough to show in a header.
RATER_NAME = re.compile(r"^\w[\w .@-]{0,39}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    rater TEXT NOT NULL, item_id TEXT NOT NULL, cand_id TEXT NOT NULL,
    aspect TEXT NOT NULL CHECK (aspect IN ('adequacy', 'fluency')),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    updated_at REAL NOT NULL,
    PRIMARY KEY (rater, item_id, cand_id, aspect));
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, rater TEXT NOT NULL,
    item_id TEXT NOT NULL, cand_id TEXT NOT NULL, aspect TEXT NOT NULL, score INTEGER);
CREATE TABLE IF NOT EXISTS positions (rater TEXT PRIMARY KEY, item_index INTEGER NOT NULL, updated_at REAL NOT NULL);
"""


def default_db_path(sheet: Path) -> Path:
    return Path(sheet).with_name(Path(sheet).stem + ".ratings.sqlite")


def check_rater(rater: str) -> str:
    if not isinstance(rater, str) or not RATER_NAME.match(rater):
        raise JudgeError(f"rater name {rater!r} is not allowed: use 1-40 letters, digits, spaces or . - _ @")
    return rater


class RatingStore:
    """Thread-safe (one connection behind a lock): the server answers requests on threads."""

    def __init__(self, path: Path, sheet: dict, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise JudgeError(f"no ratings store at {self.path}: rate with `marco-eval judge serve` first, or pass --db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cands = {(item["item_id"], c["cand_id"]) for item in sheet["items"] for c in item["candidates"]}
        self.n_items = len(sheet["items"])
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            stored = self._open(sheet["sheet_id"])
        except sqlite3.DatabaseError as e:
            self.close()
            raise JudgeError(f"{self.path} is not a ratings store ({e}): pass another --db") from None
        if stored != sheet["sheet_id"]:
            self.close()
            raise JudgeError(f"{self.path} holds ratings of another sheet ({stored}, this one is "
                             f"{sheet['sheet_id']}): pass that sheet, or a new --db")

    def _open(self, sheet_id: str) -> str:
        """Create the tables if new; return the sheet_id the file belongs to."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, SCHEMA.split(";")):  # executescript would commit early
                self._db.execute(statement)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('sheet_id', ?)", (sheet_id,))
            return self._db.execute("SELECT value FROM meta WHERE key='sheet_id'").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def set_rating(self, rater: str, item_id: str, cand_id: str, aspect: str, score: int | None) -> None:
        """Store a score (None clears it); committed when this returns."""
        check_rater(rater)
        if (item_id, cand_id) not in self.cands:
            raise JudgeError(f"candidate {cand_id!r} of item {item_id!r} is not on this sheet")
        if aspect not in ASPECTS:
            raise JudgeError(f"aspect {aspect!r} is not one of {', '.join(ASPECTS)}")
        if score is not None and (isinstance(score, bool) or score not in SCORES):
            raise JudgeError(f"score {score!r} is not an integer 1-5 (or null to clear)")
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if score is None:
                self._db.execute("DELETE FROM ratings WHERE rater=? AND item_id=? AND cand_id=? AND aspect=?",
                                 (rater, item_id, cand_id, aspect))
            else:
                self._db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                                 "(rater, item_id, cand_id, aspect) DO UPDATE SET score=excluded.score, "
                                 "updated_at=excluded.updated_at", (rater, item_id, cand_id, aspect, score, now))
            self._db.execute("INSERT INTO events (at, rater, item_id, cand_id, aspect, score) VALUES (?, ?, ?, ?, ?, ?)",
                             (now, rater, item_id, cand_id, aspect, score))

    def set_position(self, rater: str, item_index: int) -> None:
        check_rater(rater)
        if isinstance(item_index, bool) or not isinstance(item_index, int) or not 0 <= item_index < self.n_items:
            raise JudgeError(f"item index {item_index!r} is outside 0..{self.n_items - 1}")
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (rater) DO UPDATE SET "
                             "item_index=excluded.item_index, updated_at=excluded.updated_at",
                             (rater, item_index, time.time()))

    def rater_state(self, rater: str) -> dict:
        """What the page needs to resume: {ratings: {item: {cand: {aspect: score}}}, position}."""
        check_rater(rater)
        with self._lock:
            rows = self._db.execute("SELECT item_id, cand_id, aspect, score FROM ratings WHERE rater=?",
                                    (rater,)).fetchall()
            pos = self._db.execute("SELECT item_index FROM positions WHERE rater=?", (rater,)).fetchone()
        ratings: dict = {}
        for item_id, cand_id, aspect, score in rows:
            ratings.setdefault(item_id, {}).setdefault(cand_id, {})[aspect] = score
        return {"rater": rater, "ratings": ratings, "position": pos[0] if pos else 0}

    def all_ratings(self) -> list[tuple[str, str, str, str, int]]:
        """(rater, item_id, cand_id, aspect, score), in a stable order."""
        with self._lock:
            return self._db.execute("SELECT rater, item_id, cand_id, aspect, score FROM ratings "
                                    "ORDER BY rater, item_id, cand_id, aspect").fetchall()

    def n_events(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
