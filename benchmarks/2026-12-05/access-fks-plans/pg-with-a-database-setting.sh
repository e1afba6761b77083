#!/bin/bash
# usage: pgset.sh label binary "setting = value" [scenarios] -- pg.sh with a database-level setting
label=$1; bin=$2; setting=$3; sc=${4:-order_external}
db=lb_${label}_$RANDOM
P="psql -h 127.0.0.1 -p 55432 -U postgres"
$P -qc "create database $db" >/dev/null
$P -qc "alter database $db set $setting"
d=$(mktemp -d /tmp/pgr.XXXX); cd $d
out=/tmp/pg-$label-$(date +%H%M%S).json
$bin bench load --connections 64 --seconds 10 --scenarios $sc --json --database-url postgres://postgres@127.0.0.1:55432/$db > $out 2>/tmp/pg-err-$label.log
python3 - "$out" <<'PY'
import json,sys
j=json.load(open(sys.argv[1]))
for x in j['scenarios']: print(' ', x['name'], round(x['throughput']), x['p50_ms'], x['p99_ms'], x['errors'], round(x['ratio_to_ceiling'] or 0,3))
PY
cd /; rm -rf $d; $P -qc "drop database $db" >/dev/null
