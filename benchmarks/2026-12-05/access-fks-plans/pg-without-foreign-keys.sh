#!/bin/bash
# usage: pgfk.sh label binary [scenarios] -- pg.sh on a database whose order tables have no foreign keys
label=$1; bin=$2; sc=${3:-order_external}
db=lb_${label}_$RANDOM
P="psql -h 127.0.0.1 -p 55432 -U postgres"
$P -qc "create database $db" >/dev/null
d=$(mktemp -d /tmp/pgr.XXXX); cd $d
$bin migrate --database-url postgres://postgres@127.0.0.1:55432/$db >/dev/null 2>&1
$P -d $db -Atc "select format('alter table %s drop constraint %I;', conrelid::regclass, conname) from pg_constraint where contype='f' and conrelid::regclass::text in ('orders','hosting','invoices','invoice_lines','hosting_history','credit_ledger','jobs','events','domains')" | $P -d $db -q
echo "fks left: $($P -d $db -Atc "select count(*) from pg_constraint where contype='f' and conrelid::regclass::text in ('orders','hosting','invoices','invoice_lines','hosting_history','credit_ledger','events')")"
out=/tmp/pg-$label-$(date +%H%M%S).json
$bin bench load --connections 64 --seconds 10 --scenarios $sc --json --database-url postgres://postgres@127.0.0.1:55432/$db > $out 2>/tmp/pg-err-$label.log
python3 - "$out" <<'PY'
import json,sys
j=json.load(open(sys.argv[1]))
for x in j['scenarios']: print(' ', x['name'], round(x['throughput']), x['p50_ms'], x['p99_ms'], x['errors'], round(x['ratio_to_ceiling'] or 0,3))
PY
cd /; rm -rf $d; $P -qc "drop database $db" >/dev/null
