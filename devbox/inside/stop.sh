#!/bin/sh
# devbox's stop script, run in the container with `sh -c` (server.py reads this file).
# $1 signal name without SIG, $2 polls of 20 ms before SIGKILL, $3 the record file, $4 the token of
# the start to stop (empty: whatever the record names). Prints "signalled" if something was running,
# and "killed" if SIGKILL was needed.
# A process belongs to the tree if it is in the leader's group, or carries the token in its
# environment (it left the group: setsid, a double fork). The token scan runs at the start and
# once more when the group is gone, not on every poll.
# A stop right after a start can come before the new leader has written the record: then the record
# still names the previous start, long gone, and trusting it would leave the new tree running. So
# wait (up to 5 s) for the record to name our token; failing that, find the tree by its token alone.
# $5 the name of the token's variable, $6 polls of 20 ms to wait after SIGKILL before saying "stuck".
sig=$1; steps=$2; rec=$3; want=$4; tokvar=$5; grace=$6
n=0
while :; do
  read -r pg tok <"$rec" 2>/dev/null
  if [ -z "$want" ] || [ "$tok" = "$want" ] || [ $n -ge 250 ]; then break; fi
  sleep 0.02
  n=$((n + 1))
done
if [ -n "$want" ] && [ "$tok" != "$want" ]; then pg=""; tok=$want; fi
[ -n "$pg$tok" ] || exit 0
marked=""
scan() {
  marked=""
  [ -n "$tok" ] && command -v grep >/dev/null 2>&1 || return 0
  for f in $(grep -lsa "$tokvar=$tok" /proc/[0-9]*/environ); do  # one grep for all processes
    f=${f#/proc/}; f=${f%/environ}
    read -r line 2>/dev/null </proc/$f/stat || continue
    set -- ${line##*) }
    [ "$3" = "${pg:--}" ] || marked="$marked $f"  # the group's members get the group's signal, once
  done
}
alive() {
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    set -- ${line##*) }
    [ "$3" = "${pg:--}" ] && [ "$1" != Z ] && return 0
  done
  for p in $marked; do
    read -r line 2>/dev/null </proc/$p/stat || continue
    set -- ${line##*) }
    [ "$1" != Z ] && return 0
  done
  return 1
}
scan
alive || { rm -f "$rec"; exit 0; }
kill -$sig ${pg:+-$pg} $marked 2>/dev/null
echo signalled
n=0
q=0
while :; do
  while alive; do
    # most servers are gone within 10 ms: ten quick looks first, then every 20 ms
    if [ $q -lt 10 ]; then q=$((q + 1)); sleep 0.002; continue; fi
    if [ $n -eq $steps ]; then kill -KILL ${pg:+-$pg} $marked 2>/dev/null; echo killed; fi
    [ $n -gt $((steps + $grace)) ] && { echo stuck; exit 1; }
    sleep 0.02
    n=$((n + 1))
  done
  scan
  [ -z "$marked" ] && break
  [ $n -ge $steps ] && sig=KILL
  kill -$sig $marked 2>/dev/null
done
rm -f "$rec"
