#!/usr/bin/env python3
"""Which tables and indexes a SQLite database's recent commits wrote, from its WAL.

Usage (copy both files while `lodge bench load` runs, e.g. 20 s into a SQLite run, then):

    python3 benchmarks/tools/wal_frames.py lodge.db lodge.db-wal [commits]

Reads the WAL's valid frames (those whose salts match its header), groups them into
commits (a frame with a database size is a commit's last), and maps each frame's page to
the b-tree holding it (`dbstat`, read from a copy of the database file without its WAL, so
pages allocated since the last checkpoint show as "new"). Prints frames a commit, overall
and for each b-tree over the last `commits` commits (default 300). Divide by the orders a
batch holds (`lodge bench` reports batches and orders) for frames an order.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile


def page_map(db_path):
    with tempfile.TemporaryDirectory() as d:
        copy = os.path.join(d, "copy.db")
        shutil.copyfile(db_path, copy)
        con = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        return dict((p, n) for n, p in con.execute("SELECT name, pageno FROM dbstat"))


def commits(wal_path):
    data = open(wal_path, "rb").read()
    _magic, _ver, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", data[:32])
    out, cur, off = [], [], 32
    while off + 24 + page_size <= len(data):
        page, size_after, s1, s2 = struct.unpack(">4I", data[off : off + 16])
        if (s1, s2) != (salt1, salt2):
            break
        cur.append(page)
        if size_after:
            out.append(cur)
            cur = []
        off += 24 + page_size
    return out


def main():
    db, wal = sys.argv[1], sys.argv[2]
    last = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    pages = page_map(db)
    cs = commits(wal)[-last:]
    if not cs:
        sys.exit("no complete commit in the WAL")
    frames = sum(map(len, cs))
    print(f"{len(cs)} commits, {frames / len(cs):.1f} frames a commit")
    by_tree = collections.Counter(pages.get(p, "new") for c in cs for p in c)
    for name, n in by_tree.most_common():
        print(f"{n / len(cs):8.1f}  {name}")


if __name__ == "__main__":
    main()
