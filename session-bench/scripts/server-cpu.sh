#!/bin/bash
# Server CPU per cycle: `session-bench cycle <spec> <tasks>` run for 4 s and for 12 s, the
# server process's user + system time (/proc/<pid>/stat) read around each, and the difference
# of the two runs divided by the difference of their cycles, so the set-up cancels out.
# Usage: server-cpu.sh <server-pid> <spec> <tasks> [sessions]   (after a release build of
# session-bench; SESSION_BENCH_SHAPE is passed through, e.g. 50x400 for 20 KB sessions)
pid=$1; spec=$2; n=$3; sessions=${4:-1000}
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
for secs in 4 12; do
  b=$(cpu); out=$("$(dirname "$0")/../../target/release/session-bench" cycle "$spec" $n $secs $sessions | grep RESULT); a=$(cpu)
  c=$(echo "$out" | sed 's/.*cycles=\([0-9]*\).*/\1/')
  echo "$secs $((a-b)) $c"
done | awk -v spec="$spec" '{t[NR]=$2; c[NR]=$3} END {printf "%s: cycles %d/%d, server CPU per cycle (12s-4s) %.1f us\n", spec, c[1], c[2], (t[2]-t[1])*10000/(c[2]-c[1])}'
