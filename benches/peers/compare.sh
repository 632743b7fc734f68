#!/usr/bin/env bash
# jobq, the raw loop, Graphile Worker and pg-boss draining the same number of no-op jobs on
# the same server, in alternating rounds (the machine's noise falls on all of them alike).
# Usage: benches/peers/compare.sh postgres://user@host/db [JOBS] [ROUNDS]
# Needs: cargo build --release, and `npm ci` in this folder. One JSON line per figure.
set -euo pipefail
url=$1; jobs=${2:-20000}; rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
jobq=$here/../../target/release/jobq
for round in $(seq 1 "$rounds"); do
    "$jobq" --db "$url" --json bench --jobs "$jobs" --only drain --only raw |
        python3 -c 'import json,sys; r=json.load(sys.stdin); d={x["workers"]:x["jobs_per_s"] for x in r["drain"]}; raw=dict(map(tuple,r["raw_postgres"]["drain_batch32"])); print(json.dumps({"round":'"$round"',"jobq_drain_1":d.get(1),"jobq_drain_4":d.get(4),"raw_1":raw.get(1),"raw_4":raw.get(4)}))'
    echo "{\"round\":$round,\"graphile\":$(node "$here/graphile.mjs" "$url" "$jobs" | tail -1)}"
    echo "{\"round\":$round,\"pgboss\":$(node "$here/pgboss.mjs" "$url" "$jobs" | tail -1)}"
done
