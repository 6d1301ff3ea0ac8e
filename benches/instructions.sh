#!/usr/bin/env bash
# Instructions per decision (issue #12): `tact serve` and the no-op server with the same
# messages, each run under valgrind's callgrind while `tact bench` drives it, and the
# ratio. Time on a shared VM swings by 2x from one minute to the next (steal); the
# instructions a server executes per call do not, so this is the figure to compare two
# builds or two servers by when the timings are noise. It is not a measure of time:
# cache misses are not counted (they dominate screening a large random audience), and
# under valgrind every thread runs in turn ~50x slower, so what tact batches by time
# (the audit's groups of records answered in the same millisecond) comes in smaller
# batches than at full speed, and its cost per record is overstated.
#
#   benches/instructions.sh WORKDIR TACT_BINARY [SECONDS] -- [tact bench args]
#   e.g. benches/instructions.sh /tmp/ins target/release/tact 15 -- --op decide --concurrency 32
#        benches/instructions.sh /tmp/ins target/release/tact 15 -- --op stream --concurrency 4 \
#            --batch-size 1000 --detail verdict
#
# Populates 2,000 customers into WORKDIR/db once (a small state: valgrind replays it at
# every start). For the no-op server, tact with `--audit off` and tact with `--audit all`
# in turn: starts it under callgrind with instrumentation off, warms it for 2 s, counts
# the instructions of all its threads during SECONDS (default 15) of load, and divides
# by the decisions answered then. Needs valgrind (Debian: `apt-get install valgrind`).
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,21p' "$0"
    exit 2
fi
work=$1
bin=$(realpath "$2")
secs=15
shift 2
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    secs=$1
    shift
fi
[ "${1:-}" = "--" ] && shift
load=("$@")
[ ${#load[@]} -gt 0 ] || load=(--op decide --concurrency 32)
root=$(cd "$(dirname "$0")/.." && pwd)
port=${TACT_BENCH_PORT:-50978}
target="http://127.0.0.1:$port"
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 1; }
mkdir -p "$work"

wait_port() {
    for _ in $(seq 600); do
        (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && return 0
        sleep 0.5
    done
    echo "nothing listens on $port" >&2
    return 1
}

serve=("$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/db" --policy "$root/config/policy.toml"
    --snapshot-on-shutdown false --audit)

if [ ! -e "$work/db/populated" ]; then
    rm -rf "$work/db"
    "${serve[@]}" off > "$work/populate.log" 2>&1 &
    pid=$!
    wait_port
    "$bin" bench --quiet --target "$target" --populate --populate-only --customers 2000 > /dev/null
    kill -INT "$pid"
    wait "$pid" || true
    touch "$work/db/populated"
fi

# Prints instructions per decision of one server (name, then its command).
measure() {
    local name=$1
    shift
    local out="$work/$name.callgrind"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" \
        > "$work/$name.log" 2>&1 &
    local pid=$!
    wait_port
    "$bin" bench --quiet --json --target "$target" --customers 2000 --duration 2 --warmup 0 \
        "${load[@]}" > /dev/null
    callgrind_control -i on "$pid" > /dev/null 2>&1
    "$bin" bench --quiet --json --target "$target" --customers 2000 --duration "$secs" --warmup 0 \
        "${load[@]}" > "$work/$name.json"
    callgrind_control -i off "$pid" > /dev/null 2>&1
    kill -INT "$pid"
    wait "$pid" || true
    local decisions total
    decisions=$(sed -n 's/.*"decisions":\([0-9]*\).*/\1/p' "$work/$name.json")
    if [ -z "$decisions" ] || [ "$decisions" = 0 ]; then
        # Calls that take longer than the load's drain under valgrind (large batches at
        # high concurrency): fewer in flight, or more seconds.
        echo "no decisions counted: see $work/$name.json" >&2
        echo 0
        return
    fi
    total=$(callgrind_annotate "$out" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    echo $((total / decisions))
}

echo "instructions per decision, ${load[*]}, $secs s counted:"
noop=$(measure noop "$bin" bench-noop-server --listen "127.0.0.1:$port")
echo "  no-op server        $noop"
for audit in off all; do
    # Each run starts with an empty audit: the records of earlier runs would otherwise
    # grow it until fjall flushes and compacts it within the counted seconds (seen: 15x
    # the instructions per decision, most of them fjall's workers).
    rm -rf "$work/db/audit"
    n=$(measure "tact-audit-$audit" "${serve[@]}" "$audit")
    ratio=$(awk -v a="$n" -v b="$noop" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "?" }')
    printf '  tact, audit %-6s  %s  (%sx the no-op)\n' "$audit" "$n" "$ratio"
done
