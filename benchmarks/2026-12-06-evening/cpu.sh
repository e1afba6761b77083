# usage: cpu.sh cmd... ; prints the machine's busy core-seconds during cmd
read -r _ u n s i w irq sirq st _ < /proc/stat; b0=$((u+n+s+irq+sirq)); t0=$((u+n+s+i+w+irq+sirq))
"$@"
read -r _ u n s i w irq sirq st _ < /proc/stat; b1=$((u+n+s+irq+sirq)); t1=$((u+n+s+i+w+irq+sirq))
echo "busy $(( (b1-b0) )) ticks of $(( t1-t0 )) ($(( 100*(b1-b0)/(t1-t0) ))%)"
