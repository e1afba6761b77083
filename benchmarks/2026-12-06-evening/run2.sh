P="psql -h 127.0.0.1 -p 55432 -U postgres -d o2 -q"; B=/usr/lib/postgresql/15/bin/pgbench
one() { echo "== one-row commits c=64"; $B -h 127.0.0.1 -p 55432 -U postgres -n -M prepared -c 64 -j 2 -T 10 -f one.sql o2 2>&1 | grep -E "tps"; }
rep() { $P -f reset.sql >/dev/null; echo "== replay $1 batch=$2 c=$3"; $B -h 127.0.0.1 -p 55432 -U postgres -n -M prepared -c $3 -j 2 -t $((44800/$2/$3)) -f $1 o2 2>&1 | grep -E "tps|failed|aborted"; }
one
rep order_batch.sql 10 4
rep order_batch30.sql 30 4
one
