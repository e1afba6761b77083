"""Which b-trees a SQLite group commit writes.

Reads the WAL of a database left behind by a SIGKILLed server (so the WAL was not
checkpointed away), groups its frames into transactions by their commit markers, maps each
frame's page to the table or index that owns it (the `dbstat` virtual table) and prints the
average number of frames per transaction for each, over the last 20 transactions.

    python3 benchmarks/walpages.py /path/to/lodge.db
"""
import collections
import sqlite3
import struct
import sys

db = sys.argv[1]
data = open(db + '-wal', 'rb').read()
_, _, page_size, _, salt1, salt2, _, _ = struct.unpack('>8I', data[:32])
frames = []
off = 32
while off + 24 + page_size <= len(data):
    page, commit, s1, s2 = struct.unpack('>4I', data[off:off + 16])
    if (s1, s2) != (salt1, salt2):
        break
    frames.append((page, commit))
    off += 24 + page_size
txs, cur = [], []
for page, commit in frames:
    cur.append(page)
    if commit:
        txs.append(cur)
        cur = []
last = txs[-20:]
if not last:
    sys.exit('no committed transaction in the WAL')
conn = sqlite3.connect('file:%s?mode=ro' % db, uri=True)
owner = {pageno: name for name, pageno in conn.execute('SELECT name, pageno FROM dbstat')}
count = collections.Counter(owner.get(p, '(new or free page)') for t in last for p in t)
print('transactions in the WAL: %d; frames per transaction (last %d): %.1f'
      % (len(txs), len(last), sum(map(len, last)) / len(last)))
for name, n in count.most_common():
    print('%7.1f  %s' % (n / len(last), name))
