"""What each API key was told on watermarked inputs, in the key database (defenses/watermark.py),
and the orders `scramble` told it (defenses/orders.py, in probability mode only: a label or
top-k answer tells less than the record would claim).

One row per key and distinct code, written in the same transaction as the spend, so a record
is committed before its answer is sent and survives kill -9; kept through restarts and
revocation; the first `RECORD_LIMIT` per key (10,000 images: 31 MB per key at 28x28, float32)
and the first `ORDER_LIMIT` orders (2,000: 6.3 MB). `divqat verify --db` reads them back as one
Record per key id. (The orders table, its per column and the watermarks' own_answer and
confidence columns are additive: a schema-3 database gains them when opened, its rows of before
without them.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only with a watermark: serving without one never imports it
    from divqat.defenses.orders import Orders
    from divqat.defenses.watermark import Marks, Record
    from divqat.serve.database import Connection

SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (
    id {id},                             -- the order they were told in
    key_id INTEGER NOT NULL REFERENCES keys (id),
    code TEXT NOT NULL,                  -- a hash of the image's keyed code (reveals nothing of the key)
    image {blob} NOT NULL,                 -- float32 little-endian, C x H x W
    shape TEXT NOT NULL,                 -- "C,H,W"
    top1 INTEGER NOT NULL,               -- the model's own answer
    mark INTEGER NOT NULL,               -- the class the key was told
    classes INTEGER NOT NULL,            -- the model's number of classes
    own_answer {blob},                     -- float32, the model's own answer (K); NULL in rows of before it was kept
    confidence REAL,                     -- the probability the mark was served with; NULL in rows of before
    UNIQUE (key_id, code)
);
CREATE TABLE IF NOT EXISTS orders (
    id {id},                             -- the order they were told in
    key_id INTEGER NOT NULL REFERENCES keys (id),
    code TEXT NOT NULL,                  -- a hash of the image's keyed code
    image {blob} NOT NULL,                 -- float32 little-endian, C x H x W
    shape TEXT NOT NULL,                 -- "C,H,W"
    own_answer {blob} NOT NULL,            -- float32, the model's own answer (K; NATURAL is a keyword)
    served {blob} NOT NULL,                -- float32, the answer the key received (K)
    per TEXT,                            -- scramble's permutations: 'image' or 'class'; NULL in rows of before: 'image'
    UNIQUE (key_id, code)
);
"""


def save(con: Connection, key_rowid: int, images: np.ndarray, marks: Marks, limit: int | None = None) -> None:
    """Add a batch's watermarked answers to the key's record (first ones kept, up to `limit`)."""
    from divqat.defenses.watermark import RECORD_LIMIT

    limit = RECORD_LIMIT if limit is None else limit
    if not marks.selected.any():
        return
    have = con.execute("SELECT COUNT(*) FROM watermarks WHERE key_id = ?", (key_rowid,)).fetchone()[0]
    placeholders = f"({','.join('?' * len(marks.codes))})"
    known = {c for (c,) in con.execute(f"SELECT code FROM watermarks WHERE key_id = ? AND code IN {placeholders}",
                                       (key_rowid, *marks.codes))}  # fmt: skip
    rows = []
    chosen = images[marks.selected.numpy()]
    told = zip(chosen, marks.codes, marks.top1.tolist(), marks.mark.tolist(), marks.own.numpy(),
               marks.confidence.tolist(), strict=True)  # fmt: skip
    for image, code, top, mark, own, confidence in told:
        if code in known:  # told before: the record keeps the first time
            continue
        known.add(code)
        shape = ",".join(map(str, image.shape))
        blobs = [np.ascontiguousarray(a, "<f4").tobytes() for a in (image, own)]
        rows.append((key_rowid, code, blobs[0], shape, top, mark, marks.classes, blobs[1], confidence))
    con.executemany(
        "INSERT INTO watermarks (key_id, code, image, shape, top1, mark, classes, own_answer, confidence) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows[: max(0, limit - have)],
    )


def save_orders(con: Connection, key_rowid: int, orders: Orders, limit: int | None = None) -> None:
    """Add a batch's scrambled orders to the key's record (first one per code kept, up to `limit`)."""
    from divqat.defenses.orders import ORDER_LIMIT

    limit = ORDER_LIMIT if limit is None else limit
    if not len(orders):
        return
    have = con.execute("SELECT COUNT(*) FROM orders WHERE key_id = ?", (key_rowid,)).fetchone()[0]
    if have >= limit:
        return
    placeholders = f"({','.join('?' * len(orders.codes))})"
    known = {c for (c,) in con.execute(f"SELECT code FROM orders WHERE key_id = ? AND code IN {placeholders}",
                                       (key_rowid, *orders.codes))}  # fmt: skip
    rows = []
    for code, image, natural, served in zip(orders.codes, orders.images, orders.natural, orders.served, strict=True):
        if code in known:
            continue
        known.add(code)
        blob = [np.ascontiguousarray(t.numpy(), "<f4").tobytes() for t in (image, natural, served)]
        rows.append((key_rowid, code, blob[0], ",".join(map(str, image.shape)), blob[1], blob[2], orders.per))
    con.executemany(
        "INSERT INTO orders (key_id, code, image, shape, own_answer, served, per) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows[: limit - have],
    )


def load(con: Connection, key_rowid: int) -> Record:
    import torch

    from divqat.defenses.watermark import Record

    record = Record()
    query = ("SELECT code, image, shape, top1, mark, classes, own_answer, confidence FROM watermarks "
             "WHERE key_id = ? ORDER BY id")  # fmt: skip
    owns, confidences = [], []
    for code, blob, shape, top, mark, classes, own, confidence in con.execute(query, (key_rowid,)):
        record.classes = classes
        dims = tuple(int(d) for d in shape.split(","))
        record.codes.append(code)
        record.images.append(torch.from_numpy(np.frombuffer(blob, "<f4").reshape(dims).copy()))
        record.top1.append(top)
        record.mark.append(mark)
        owns.append(own)
        confidences.append(confidence)
    if all(own is not None for own in owns):  # rows of before it was kept: the test goes without
        record.natural = [torch.from_numpy(np.frombuffer(own, "<f4").copy()) for own in owns]
        # Rows of before the mark could be lifted were served with the victim's own top probability.
        told = zip(record.natural, confidences, strict=True)
        record.confidence = [float(n.max()) if c is None else c for n, c in told]
    # A server restarted with the other `per` told the key orders of both kinds: the record
    # holds the kind it told last (the test reads one kind); the others stay in the database.
    query = "SELECT code, image, shape, own_answer, served, per FROM orders WHERE key_id = ? ORDER BY id"
    rows = con.execute(query, (key_rowid,)).fetchall()
    record.orders.per = (rows[-1][5] or "image") if rows else "image"
    for code, blob, shape, natural, served, per in rows:
        if (per or "image") != record.orders.per:
            continue
        dims = tuple(int(d) for d in shape.split(","))
        record.orders.codes.append(code)
        record.orders.images.append(torch.from_numpy(np.frombuffer(blob, "<f4").reshape(dims).copy()))
        record.orders.natural.append(torch.from_numpy(np.frombuffer(natural, "<f4").copy()))
        record.orders.served.append(torch.from_numpy(np.frombuffer(served, "<f4").copy()))
    return record
