# The replay of 2026-12-06 (evening), on a cluster at 127.0.0.1:55432 whose database o2 holds
# a Lodge order run and stage.sql's staging. Each replay writes 44,800 orders back; `cpu.sh`
# counts the machine's busy time around it. run1.log was recorded with one copy of
# order_batch.sql per batch size (10, 30, 64) before they became one script taking `-D n=`.
#   bash run.sh            # without foreign keys (run1.log)
#   psql … -f fks.sql; bash run.sh fks   # with Lodge's foreign keys and count trigger
P="psql -h 127.0.0.1 -p 55432 -U postgres -d o2 -q"; B=/usr/lib/postgresql/15/bin/pgbench
one() { echo "== one-row commits c=64"; bash cpu.sh $B -h 127.0.0.1 -p 55432 -U postgres -n -M prepared -c 64 -j 2 -T 10 -f one.sql o2 2>&1 | grep -E "tps|latency average|busy"; }
rep() { # script, orders a batch, clients
  $P -f reset.sql >/dev/null; echo "== replay $1 batch=$2 c=$3"
  bash cpu.sh $B -h 127.0.0.1 -p 55432 -U postgres -n -M prepared -c "$3" -j 2 -D n="$2" \
    -t $((44800/$2/$3)) -f "$1" o2 2>&1 | grep -E "tps|latency average|failed|aborted|busy"; }
one
if [ "$1" = fks ]; then
  rep order_batch.sql 10 4
  rep order_batch.sql 30 4
  rep order_batch.sql 30 2
  rep order_batch.sql 64 2
  rep order_batch.sql 64 4
else
  rep order_batch.sql 10 4
  rep order_batch.sql 10 8
  rep order_batch.sql 10 16
  rep order_batch.sql 30 4
  rep order_batch.sql 30 8
  rep order_batch_nocounter.sql 30 8
  rep order_batch_nocounter.sql 10 16
fi
one
