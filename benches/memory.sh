#!/usr/bin/env bash
# The memory bench (issue #12): resident memory of `tact serve` while serving, time from
# start to serving with a snapshot, and full replay speed, on a generated log, for one
# or more release builds of tact compared in the same run.
#
#   benches/memory.sh CUSTOMERS EVENTS WORKDIR NAME=TACT_BINARY [NAME=TACT_BINARY ...]
#   e.g. benches/memory.sh 1000000 35000000 /tmp/mem before=/tmp/tact-main after=target/release/tact
#
# Targets (1M customers, 35M events): RSS at most 1.5 GiB while serving, start from a
# snapshot in at most 10 s, full replay no slower per event than the baseline.
#
# The log is generated once with the genlog example (Storage::append in batches of
# 16,384, as the group commit writes; built here in release) into WORKDIR/data/log, in
# the engine GENLOG_ENGINE names (fjall, the default, or sled), and reused if it
# already holds EVENTS events (each binary opens it with the engine that wrote it). Then, for each binary in turn:
#   1. `tact replay` (full replay, no snapshot): events/s as it prints them, wall time
#      of the whole command (open included) and its peak RSS;
#   2. `tact serve` without a snapshot: time until its port accepts connections (the
#      listener is bound once state is rebuilt), then 50 DecideBatch calls of 100
#      customers (`tact check`), then VmRSS/VmHWM from /proc; SIGTERM writes a snapshot;
#   3. `tact serve` again, from that snapshot: the same figures.
# The snapshot is removed before each binary's step 2, so each starts from its own.
set -euo pipefail

if [ $# -lt 4 ]; then
    sed -n '2,20p' "$0"
    exit 2
fi
customers=$1
events=$2
work=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
port=${TACT_BENCH_PORT:-50977}
data="$work/data"
# Run from WORKDIR (no config/tact.toml there: every binary runs on its defaults).
policy="$root/config/policy.toml"
mkdir -p "$data"

cargo build --release --locked -q -p tact-log --example genlog --manifest-path "$root/Cargo.toml"
genlog="$root/target/release/examples/genlog"
if [ ! -f "$work/generated-$events" ]; then
    rm -rf "$data"
    mkdir -p "$data"
    "$genlog" "$data/log" "$customers" "$events" | tee "$work/generated-$events"
fi
du -sb "$data/log" | awk -v e="$events" '{printf "log on disk: %.0f bytes, %.0f bytes/event\n", $1, $1/e}'

kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

wait_port() { # pid
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$1" 2>/dev/null || { echo "tact serve exited" >&2; return 1; }
        sleep 0.02
    done
}

warm_up() { # binary
    local args=()
    for batch in $(seq 0 49); do
        args=()
        for k in $(seq 0 99); do
            args+=(--customer "$(printf 'customer-%08d' $(((batch * 100 + k) * 7919 % customers)))")
        done
        (cd "$work" && "$1" check --server "http://127.0.0.1:$port" --channel email --purpose marketing "${args[@]}" \
            >/dev/null) || true
    done
}

serve_once() { # name binary label
    local name=$1 bin=$2 label=$3
    local started ready pid
    started=$(date +%s.%N)
    (cd "$work" && exec "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" \
        --policy "$policy" --log-level warn >"$work/serve-$name-$label.log" 2>&1) &
    pid=$!
    wait_port "$pid"
    ready=$(date +%s.%N)
    local rss_ready
    rss_ready=$(kb "$pid" VmRSS)
    warm_up "$bin"
    printf '%-8s %-13s start-to-serving %6.2f s  RSS at start %5d MiB  after warm-up %5d MiB  peak %5d MiB\n' \
        "$name" "$label" "$(echo "$ready - $started" | bc)" $((rss_ready / 1024)) \
        $(($(kb "$pid" VmRSS) / 1024)) $(($(kb "$pid" VmHWM) / 1024))
    kill -TERM "$pid"
    wait "$pid" || true
}

for spec in "$@"; do
    name=${spec%%=*}
    bin=$(realpath "${spec#*=}")
    out=$( (cd "$work" && /usr/bin/time -f '%e %M' "$bin" replay --data-dir "$data" --policy "$policy" \
        --log-level warn) 2>&1)
    replayed=$(echo "$out" | grep '^replayed')
    read -r wall peak <<<"$(echo "$out" | tail -1)"
    printf '%-8s %-13s %s; whole command %s s, peak RSS %d MiB\n' "$name" "full replay" \
        "$(echo "$replayed" | sed 's/.*in \(.*\)/\1/')" "$wall" $((peak / 1024))
    rm -f "$data/log/tact-snapshot"
    serve_once "$name" "$bin" "no snapshot"
    serve_once "$name" "$bin" "from snapshot"
done
