#!/bin/bash
# Client instructions per cycle: `session-bench cycle <spec> <tasks>` under callgrind for 4 s
# and for 12 s, the difference of the instructions divided by the difference of the cycles,
# so the set-up cancels out. The callgrind files stay in $TMPDIR for callgrind_annotate.
# Usage: client-instructions.sh <spec> <tasks> <sessions> [shape, e.g. 50x400]
spec=$1; n=$2; sessions=$3; shape=${4:-5x40}
for secs in 4 12; do
  f=${TMPDIR:-/tmp}/cg.$$.$secs
  out=$(SESSION_BENCH_SHAPE=$shape valgrind --tool=callgrind --callgrind-out-file=$f "$(dirname "$0")/../../target/release/session-bench" cycle "$spec" $n $secs $sessions 2>/dev/null | grep RESULT)
  c=$(echo "$out" | sed 's/.*cycles=\([0-9]*\).*/\1/')
  ir=$(grep -E "^(summary|totals):" $f | head -1 | awk '{print $2}')
  echo "$c $ir"
done | awk -v spec="$spec" '{c[NR]=$1; i[NR]=$2} END {printf "%s: cycles %d/%d, client instructions per cycle %.1f k\n", spec, c[1], c[2], (i[2]-i[1])/(c[2]-c[1])/1000}'
