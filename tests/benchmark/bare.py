"""The yardstick: the least a webhook receiver can do per request in one
Python process. A bare Tornado handler that verifies the HMAC, parses the
JSON and commits one SQLite row (WAL, synchronous=FULL), then answers 200.

    python -m tests.benchmark.bare --port 8191 --db /tmp/bare.db --secret S
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import sqlite3
import sys

from tornado import web
from tornado.httpserver import HTTPServer


class Bare(web.RequestHandler):
    def initialize(self, db: sqlite3.Connection, secret: bytes) -> None:
        self.db = db
        self.secret = secret

    def post(self) -> None:
        body = self.request.body
        digest = hmac.new(self.secret, body, hashlib.sha256).digest()
        given = base64.b64decode(self.request.headers.get("X-Shopify-Hmac-Sha256", ""))
        if not hmac.compare_digest(digest, given):
            raise web.HTTPError(403)
        order = json.loads(body)
        self.db.execute("INSERT INTO deliveries (order_id, body) VALUES (?, ?)",
                        (order["id"], body))
        self.db.commit()
        self.write({"status": 200})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    db = sqlite3.connect(args.db)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY, order_id, body)")

    async def serve() -> None:
        app = web.Application([(r"/webhooks/shopify/order/create",
                                Bare, {"db": db, "secret": args.secret.encode()})])
        HTTPServer(app).listen(args.port, "127.0.0.1")
        print("event=service.started", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
