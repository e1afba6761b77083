#!/bin/bash
# /tmp/stale.sh label binary: order_external then pay_credit, with the invoices analyzed while all paid and no autovacuum after
label=$1; bin=$2
P="psql -h 127.0.0.1 -p 55432 -U postgres"
(/tmp/abp.sh $label $bin pg order_external,pay_credit > /tmp/stale-$label.out 2>&1 &)
sleep 2
until grep -q "bench: order_external" /tmp/abp-err-$label.log 2>/dev/null; do sleep 0.2; done
sleep 8
db=$($P -Atc "select datname from pg_database where datname like 'abp_${label}_%' order by oid desc limit 1")
$P -d $db -qc "analyze invoices" -c "analyze hosting" -c "analyze orders"
$P -qc "alter system set autovacuum = off" -c "select pg_reload_conf()" >/dev/null
while pgrep -f "abp.sh $label" >/dev/null; do sleep 1; done
$P -qc "alter system reset autovacuum" -c "select pg_reload_conf()" >/dev/null
grep -E "order_|pay_" /tmp/stale-$label.out
$P -d $db -Atc "select status, count(*) from invoices group by 1"
