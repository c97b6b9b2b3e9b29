#!/usr/bin/env bash
# Every benchmark once, with its defaults (about 35 minutes on 2 busy cores); extra arguments
# (e.g. --tag idle) go to each script. Results land in benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
status=0
for script in bench_query bench_indexing bench_ann bench_upscale bench_backends bench_text bench_runtime bench_live; do
    echo "== $script ($(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') load)"
    "$python" "benchmarks/$script.py" "$@" || status=1
done
# Untagged runs are "the latest": paste them into the README (the 1M run is its own command).
if [ $# -eq 0 ]; then "$python" benchmarks/update_readme.py --also ann-1m,query_latency-realesr; fi
exit $status
