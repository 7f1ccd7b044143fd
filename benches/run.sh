#!/usr/bin/env bash
# batchgen throughput / memory / resume benchmark. See benches/README.md.
#
#   benches/run.sh [--quick] [--no-python] [--repeat N] [--bin PATH] [--scenario NAME ...]
#
# --bin PATH: measure this batchgen binary (say, an older build kept aside) instead of building.
# Scenarios: c64 c256 slow nginx memory resume merge report batchfiles parquet (default: all), and
# huge (opt-in: a 10,000,000-row run and its resume, several GB of disk). Results: a table on
# stdout, target/bench/results.md (Markdown) and target/bench/results.jsonl (raw).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OPENAI_VERSION=${BENCH_OPENAI_VERSION:-3.57.0}
ALL_SCENARIOS=(c64 c256 slow nginx memory resume merge report batchfiles parquet)
# Scenarios run only when named with --scenario.
OPT_IN_SCENARIOS=(huge)
QUICK=0
PYTHON=1
REPEAT=
SCENARIOS=()
BIN_GIVEN=

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-python) PYTHON=0 ;;
        --repeat)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || usage 2
            shift
            REPEAT=$1
            ;;
        --bin)
            [[ $# -ge 2 ]] || usage 2
            shift
            BIN_GIVEN=$1
            ;;
        --scenario)
            [[ $# -ge 2 ]] || usage 2
            shift
            SCENARIOS+=("$1")
            ;;
        --scenario=*) SCENARIOS+=("${1#--scenario=}") ;;
        -h | --help) usage 0 ;;
        *)
            echo "unknown argument: $1" >&2
            usage 2
            ;;
    esac
    shift
done
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=("${ALL_SCENARIOS[@]}")
for s in "${SCENARIOS[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} ${OPT_IN_SCENARIOS[*]} " == *" $s "* ]] || {
        echo "unknown scenario: $s (one of: ${ALL_SCENARIOS[*]} ${OPT_IN_SCENARIOS[*]})" >&2
        exit 2
    }
done

# Sizes (environment overrides for experiments).
if [[ $QUICK == 1 ]]; then
    N_FAST=${BENCH_ROWS:-5000}
    N_PY=${BENCH_PY_ROWS:-5000}
    N_SLOW=${BENCH_SLOW_ROWS:-5000}
    N_MEM=${BENCH_MEM_ROWS:-100000}
    N_HUGE=${BENCH_HUGE_ROWS:-1000000}
    WRK_DURATION=${BENCH_WRK_DURATION:-5s}
    REPEAT=${REPEAT:-1}
else
    N_FAST=${BENCH_ROWS:-20000}
    N_PY=${BENCH_PY_ROWS:-20000}
    N_SLOW=${BENCH_SLOW_ROWS:-5000}
    N_MEM=${BENCH_MEM_ROWS:-1000000}
    N_HUGE=${BENCH_HUGE_ROWS:-10000000}
    WRK_DURATION=${BENCH_WRK_DURATION:-10s}
    REPEAT=${REPEAT:-5}
fi
SLOW_LATENCY_MS=200

OUT=target/bench
VENV=target/bench-venv
BIN=${BIN_GIVEN:-target/release/batchgen}
REPORT="python3 benches/report.py"
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in python3 curl /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if ! command -v wrk >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing wrk (apt-get install wrk)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >&2 ||
        log "warning: apt-get install wrk failed"
fi
command -v wrk >/dev/null || die "wrk is required (Debian: apt-get install wrk)"

# ---------------------------------------------------------------------------------------------
# Build once.
if [[ -z $BIN_GIVEN ]]; then
    log "building: cargo build --release --locked"
    cargo build --release --locked >&2
fi
[[ -x $BIN ]] || die "$BIN missing after the build"
RUN_HELP=$("$BIN" run --help)
for flag in --base-url --concurrency --no-progress --quiet --summary-json --output; do
    grep -q -- "$flag" <<<"$RUN_HELP" || die "batchgen run has no $flag flag any more: update benches/run.sh"
done
"$BIN" mock-server --help | grep -q -- --latency || die "batchgen mock-server has no --latency flag"

# ---------------------------------------------------------------------------------------------
# Python baseline venv (skipped, not fatal, when pip cannot reach PyPI).
PY_OK=0
if [[ $PYTHON == 1 ]] && [[ " ${SCENARIOS[*]} " =~ \ (c64|c256|slow)\  ]]; then
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating the Python venv $VENV"
        python3 -m venv "$VENV" >&2 || log "warning: python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    if [[ -x $VENV/bin/python ]]; then
        if "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
            PY_OK=1
        else
            log "pip install openai==$OPENAI_VERSION into $VENV"
            if "$VENV/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" >&2; then
                PY_OK=1
            fi
        fi
    fi
    [[ $PY_OK == 1 ]] || log "WARNING: no venv with openai==$OPENAI_VERSION (pip failed: no network?); the Python baseline is SKIPPED"
fi

# ---------------------------------------------------------------------------------------------
# Input rows, generated deterministically and cached by size.
rows_file() {
    local n=$1 f=$OUT/rows-$1.jsonl
    if [[ ! -s $f ]] || [[ $(wc -l <"$f") -ne $n ]]; then
        log "generating $n rows -> $f"
        python3 benches/gen_rows.py "$n" "$f.tmp" && mv "$f.tmp" "$f"
    fi
    echo "$f"
}
BODY_FILE=$OUT/body.json
python3 benches/gen_rows.py --body >"$BODY_FILE"

# ---------------------------------------------------------------------------------------------
# Mock servers: one per latency, started on demand on a free port, stopped on exit.
declare -A MOCK_PID MOCK_URL
cleanup() {
    local p
    for p in "${MOCK_PID[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${MOCK_PID[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_mock() { # LATENCY_MS
    local ms=$1 logf=$OUT/mock-$1ms.log url="" i
    [[ -n ${MOCK_PID[$ms]:-} ]] && return 0
    "$BIN" mock-server --port 0 --latency "${ms}ms" >"$logf" 2>&1 &
    MOCK_PID[$ms]=$!
    for i in $(seq 100); do
        url=$(sed -n 's/^mock-server listening on \(http[^ ]*\).*/\1/p' "$logf")
        [[ -n $url ]] && break
        kill -0 "${MOCK_PID[$ms]}" 2>/dev/null || die "mock-server exited: $(cat "$logf")"
        sleep 0.1
    done
    [[ -n $url ]] || die "mock-server did not start: $(cat "$logf")"
    for i in $(seq 100); do
        curl -sf "$url/stats" >/dev/null && break
        sleep 0.1
    done
    curl -sf "$url/stats" >/dev/null || die "mock-server at $url does not answer GET /stats"
    MOCK_URL[$ms]=$url
    log "mock-server (latency ${ms} ms) at $url, pid ${MOCK_PID[$ms]}"
}

# A fixed-response endpoint much faster than the mock: nginx, one worker, answering every
# POST with the same chat completion at once (the core `return` directive; nginx reads and
# drops the request body itself). Installed with apt-get when missing and run as root.
start_nginx() {
    local dir=$ROOT/$OUT/nginx port i
    [[ -n ${MOCK_PID[nginx]:-} ]] && return 0
    if ! command -v nginx >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing nginx (apt-get install nginx-light)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; } >&2 ||
            log "warning: apt-get install nginx failed"
    fi
    command -v nginx >/dev/null || die "nginx is required for the nginx scenario (Debian: apt-get install nginx-light)"
    mkdir -p "$dir/logs"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type application/json;
            return 200 '{"id":"chatcmpl-fixed","object":"chat.completion","created":1,"model":"qwen-plus","choices":[{"index":0,"message":{"role":"assistant","content":"A short fixed answer for the benchmark."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33}}';
        }
    }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/logs/stderr.log" &
    MOCK_PID[nginx]=$!
    MOCK_URL[nginx]="http://127.0.0.1:$port/v1"
    for i in $(seq 100); do
        curl -sf -X POST -d '{}' "${MOCK_URL[nginx]}/chat/completions" >/dev/null && break
        kill -0 "${MOCK_PID[nginx]}" 2>/dev/null || die "nginx exited: $(cat "$dir/logs/stderr.log" "$dir/logs/error.log" 2>/dev/null)"
        sleep 0.1
    done
    log "nginx (one worker, fixed answer) at ${MOCK_URL[nginx]}, pid ${MOCK_PID[nginx]}"
}

# CPU seconds (user+sys) a process has used so far.
TICKS=$(getconf CLK_TCK)
proc_cpu() {
    awk -v t="$TICKS" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' "/proc/$1/stat"
}
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a - b }'; }

# ---------------------------------------------------------------------------------------------
# The three tools.

# run_wrk SCENARIO LATENCY_MS C [ENDPOINT [THREADS]] (ENDPOINT: a key of MOCK_URL, default the
# mock of that latency)
run_wrk() {
    local s=$1 ms=$2 c=$3 key=${4:-$2} threads=${5:-2}
    local url=${MOCK_URL[$key]} tf=$OUT/$1.wrk.$RUN.time wl=$OUT/$1.wrk.$RUN.log
    local m0 m1 rate reqs dur non2xx p50 note=""
    log "$s: wrk -t$threads -c$c -d$WRK_DURATION (endpoint $key) [run $RUN]"
    m0=$(proc_cpu "${MOCK_PID[$key]}")
    BENCH_BODY_FILE=$BODY_FILE /usr/bin/time -v -o "$tf" \
        wrk -t"$threads" -c"$c" -d"$WRK_DURATION" --timeout 10s --latency -s benches/wrk_chat.lua \
        "$url/chat/completions" >"$wl" 2>&1 || die "wrk failed: $(cat "$wl")"
    m1=$(proc_cpu "${MOCK_PID[$key]}")
    rate=$(awk '/^Requests\/sec:/ { print $2 }' "$wl")
    reqs=$(awk '/requests in/ { print $1; exit }' "$wl")
    dur=$(sed -n 's/.*requests in \([0-9.]*\)\(m\{0,1\}s\).*/\1 \2/p' "$wl" |
        awk '{ print ($2 == "ms") ? $1 / 1000 : $1 }')
    # p50 latency in ms (wrk prints us, ms or s).
    p50=$(awk '$1 == "50%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        print (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v; exit }' "$wl")
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$wl")
    [[ -n $non2xx ]] && note="$non2xx non-2xx answers"
    grep -q "Socket errors" "$wl" && note="${note:+$note; }$(grep 'Socket errors' "$wl" | sed 's/^ *//')"
    $REPORT add "$RESULTS" --scenario "$s" --tool wrk --run "$RUN" --rows "$reqs" --wall-s "$dur" \
        --rate "$rate" --time-file "$tf" --mock-cpu-s "$(minus "$m1" "$m0")" --c "$c" \
        --latency-ms "$ms" ${p50:+--p50-ms "$p50"} --note "$note"
}

# run_oha SCENARIO LATENCY_MS C (only when oha is installed; never required)
run_oha() {
    command -v oha >/dev/null || return 0
    local s=$1 ms=$2 c=$3 url=${MOCK_URL[$2]} tf=$OUT/$1.oha.$RUN.time ol=$OUT/$1.oha.$RUN.json
    local m0 m1 line
    log "$s: oha -c$c -z$WRK_DURATION (latency ${ms} ms)"
    m0=$(proc_cpu "${MOCK_PID[$ms]}")
    if ! /usr/bin/time -v -o "$tf" oha --no-tui --output-format json -z "$WRK_DURATION" -c "$c" \
        -m POST -H 'Content-Type: application/json' -D "$BODY_FILE" "$url/chat/completions" \
        >"$ol" 2>"$ol.err"; then
        # Older oha: -j instead of --output-format json.
        /usr/bin/time -v -o "$tf" oha --no-tui -j -z "$WRK_DURATION" -c "$c" \
            -m POST -H 'Content-Type: application/json' -D "$BODY_FILE" "$url/chat/completions" \
            >"$ol" 2>"$ol.err" || {
            log "warning: oha failed, skipped: $(head -c 300 "$ol.err")"
            return 0
        }
    fi
    m1=$(proc_cpu "${MOCK_PID[$ms]}")
    line=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
rate, total = s["requestsPerSec"], s["total"]
print(int(round(rate * total)), total, rate)' "$ol") || {
        log "warning: cannot read oha output, skipped"
        return 0
    }
    read -r reqs dur rate <<<"$line"
    $REPORT add "$RESULTS" --scenario "$s" --tool oha --run "$RUN" --rows "$reqs" --wall-s "$dur" \
        --rate "$rate" --time-file "$tf" --mock-cpu-s "$(minus "$m1" "$m0")" --c "$c" \
        --latency-ms "$ms"
}

# run_batchgen SCENARIO LATENCY_MS C ROWS_FILE N OUT_FILE [fresh|resume [ENDPOINT]]
run_batchgen() {
    local s=$1 ms=$2 c=$3 rows=$4 n=$5 out=$6 mode=${7:-fresh} key=${8:-$2}
    local url=${MOCK_URL[$key]} tf=$OUT/$1.batchgen.$RUN.time bl=$OUT/$1.batchgen.$RUN.log
    local sj=$OUT/$1.batchgen.$RUN.summary.json m0 m1 t0 t1 rc=0 ok note=""
    if [[ $mode == fresh ]]; then
        rm -f "$out" "$out.lock" "$out".prev*
    fi
    rm -f "$sj"
    log "$s: batchgen run $n rows, -c $c (latency ${ms} ms, $mode) [run $RUN]"
    m0=$(proc_cpu "${MOCK_PID[$key]}")
    t0=$(now)
    /usr/bin/time -v -o "$tf" "$BIN" run "$rows" -o "$out" --base-url "$url" -c "$c" \
        --no-progress -q --summary-json "$sj" 2>"$bl" || rc=$?
    t1=$(now)
    m1=$(proc_cpu "${MOCK_PID[$key]}")
    [[ $rc == 0 ]] || note="exit $rc: $(head -c 200 "$bl" | tr '\n' ' ')"
    if [[ $mode == resume ]]; then
        ok=$($REPORT json-field "$sj" rows_skipped 2>/dev/null || echo 0)
        note="${note:+$note; }resume: $ok rows skipped, $($REPORT json-field "$sj" requests) sent"
    else
        ok=$($REPORT json-field "$sj" rows_ok 2>/dev/null || echo 0)
    fi
    $REPORT add "$RESULTS" --scenario "$s" --tool batchgen --run "$RUN" --rows "$n" \
        --wall-s "$(minus "$t1" "$t0")" --time-file "$tf" --mock-cpu-s "$(minus "$m1" "$m0")" \
        --c "$c" --latency-ms "$ms" --ok "${ok:-0}" --note "$note"
}

# run_python SCENARIO LATENCY_MS C ROWS_FILE N
run_python() {
    [[ $PY_OK == 1 ]] || return 0
    local s=$1 ms=$2 c=$3 rows=$4 n=$5 url=${MOCK_URL[$2]}
    local tf=$OUT/$1.python.time pl=$OUT/$1.python.log out=$OUT/$1.python.out.jsonl
    local m0 m1 t0 t1 rc=0 ok note
    log "$s: Python AsyncOpenAI + Semaphore, $n rows, c=$c (latency ${ms} ms)"
    m0=$(proc_cpu "${MOCK_PID[$ms]}")
    t0=$(now)
    /usr/bin/time -v -o "$tf" "$VENV/bin/python" benches/python_baseline.py "$rows" "$out" \
        --base-url "$url" -c "$c" >"$pl" 2>"$pl.err" || rc=$?
    t1=$(now)
    m1=$(proc_cpu "${MOCK_PID[$ms]}")
    ok=$($REPORT json-field "$pl" ok 2>/dev/null || echo 0)
    note="openai $OPENAI_VERSION; in-script wall $($REPORT json-field "$pl" wall_s 2>/dev/null || echo ?) s"
    [[ $rc == 0 ]] || note="$note; exit $rc: $(tail -c 200 "$pl.err" | tr '\n' ' ')"
    $REPORT add "$RESULTS" --scenario "$s" --tool python --rows "$n" \
        --wall-s "$(minus "$t1" "$t0")" --time-file "$tf" --mock-cpu-s "$(minus "$m1" "$m0")" \
        --c "$c" --latency-ms "$ms" --ok "${ok:-0}" --note "$note"
}

# ---------------------------------------------------------------------------------------------
# Scenarios.

MEM_OUT=$OUT/memory.out.jsonl
RUN=1

# The machine is shared: the raw generator and batchgen alternate REPEAT times, and the report
# takes the median of each, so that a burst of someone else's load hits both alike.
scenario_fast() { # NAME C
    local s=$1 c=$2 rows pyrows
    start_mock 0
    rows=$(rows_file "$N_FAST")
    for RUN in $(seq "$REPEAT"); do
        run_wrk "$s" 0 "$c"
        run_oha "$s" 0 "$c"
        run_batchgen "$s" 0 "$c" "$rows" "$N_FAST" "$OUT/$s.out.jsonl"
    done
    RUN=1
    if [[ $PY_OK == 1 ]]; then
        pyrows=$(rows_file "$N_PY")
        run_python "$s" 0 "$c" "$pyrows" "$N_PY"
    fi
}

scenario_slow() {
    local rows
    start_mock "$SLOW_LATENCY_MS"
    rows=$(rows_file "$N_SLOW")
    for RUN in $(seq "$REPEAT"); do
        run_wrk slow "$SLOW_LATENCY_MS" 256
        run_batchgen slow "$SLOW_LATENCY_MS" 256 "$rows" "$N_SLOW" "$OUT/slow.out.jsonl"
    done
    RUN=1
    run_python slow "$SLOW_LATENCY_MS" 256 "$rows" "$N_SLOW"
}

# Against nginx's fixed answer: how near the wire the runner gets (wrk -t1, as one worker).
scenario_nginx() {
    local rows
    start_nginx
    rows=$(rows_file "$N_FAST")
    for RUN in $(seq "$REPEAT"); do
        run_wrk nginx 0 64 nginx 1
        run_batchgen nginx 0 64 "$rows" "$N_FAST" "$OUT/nginx.out.jsonl" fresh nginx
    done
    RUN=1
}

scenario_memory() {
    local rows
    start_mock 0
    rows=$(rows_file "$N_MEM")
    run_batchgen memory 0 64 "$rows" "$N_MEM" "$MEM_OUT"
}

scenario_resume() {
    local rows done_rows=""
    start_mock 0
    rows=$(rows_file "$N_MEM")
    # The job must be done: reuse the memory scenario's output when it is complete.
    if [[ -s $MEM_OUT ]]; then
        done_rows=$(wc -l <"$MEM_OUT")
    fi
    if [[ $done_rows != "$N_MEM" ]]; then
        log "resume: no finished $N_MEM-row job in $MEM_OUT; running it first (not timed)"
        rm -f "$MEM_OUT" "$MEM_OUT.lock" "$MEM_OUT".prev*
        "$BIN" run "$rows" -o "$MEM_OUT" --base-url "${MOCK_URL[0]}" -c 64 --no-progress -q \
            2>"$OUT/resume.prep.log" || die "could not prepare the done job: $(cat "$OUT/resume.prep.log")"
    fi
    # Cheap (seconds) and sensitive to outside load: repeated like the fast scenarios.
    for RUN in $(seq "$REPEAT"); do
        run_batchgen resume 0 64 "$rows" "$N_MEM" "$MEM_OUT" resume
    done
    RUN=1
}

# run_cmd SCENARIO ROWS -- COMMAND...: times one batchgen command (not a run) with time -v.
run_cmd() {
    local s=$1 n=$2 tf=$OUT/$1.cmd.time cl=$OUT/$1.cmd.log t0 t1 rc=0 note=""
    shift 3
    log "$s: $(basename "$1") ${*:2}"
    t0=$(now)
    /usr/bin/time -v -o "$tf" "$@" >"$cl" 2>&1 || rc=$?
    t1=$(now)
    [[ $rc == 0 ]] || note="exit $rc: $(head -c 200 "$cl" | tr '\n' ' ')"
    $REPORT add "$RESULTS" --scenario "$s" --tool batchgen --rows "$n" \
        --wall-s "$(minus "$t1" "$t0")" --time-file "$tf" --ok "$([[ $rc == 0 ]] && echo "$n" || echo 0)" \
        --note "$note"
}

# The memory scenario's finished N_MEM-row job, made (not timed) when missing.
done_job() {
    local rows=$1
    start_mock 0
    if [[ ! -s $MEM_OUT ]] || [[ $(wc -l <"$MEM_OUT") != "$N_MEM" ]]; then
        log "no finished $N_MEM-row job in $MEM_OUT; running it first (not timed)"
        rm -f "$MEM_OUT" "$MEM_OUT.lock" "$MEM_OUT".prev*
        "$BIN" run "$rows" -o "$MEM_OUT" --base-url "${MOCK_URL[0]}" -c 64 --no-progress -q \
            2>"$OUT/done-job.log" || die "could not make the done job: $(cat "$OUT/done-job.log")"
    fi
}

# batchgen merge of four shards of the done job (split by line: each id in one shard).
scenario_merge() {
    local rows i shards=()
    rows=$(rows_file "$N_MEM")
    done_job "$rows"
    rm -f "$OUT"/merge.shard-*
    split -n l/4 -d -a 1 --additional-suffix=.results.jsonl "$MEM_OUT" "$OUT/merge.shard-"
    for i in 0 1 2 3; do shards+=("$OUT/merge.shard-$i.results.jsonl"); done
    rm -f "$OUT/merge.out.jsonl"
    run_cmd merge "$N_MEM" -- "$BIN" merge "${shards[@]}" -o "$OUT/merge.out.jsonl"
    rm -f "${shards[@]}" "$OUT/merge.out.jsonl"
}

# batchgen report over the done job's records.
scenario_report() {
    local rows
    rows=$(rows_file "$N_MEM")
    done_job "$rows"
    run_cmd report "$N_MEM" -- "$BIN" report "$MEM_OUT" -o "$OUT/report.html"
}

# The batch input files of N_MEM rows, as `run --dry-run --batch` writes them (no upload).
scenario_batchfiles() {
    local rows
    rows=$(rows_file "$N_MEM")
    rm -f "$OUT/batchfiles.out.jsonl"
    run_cmd batchfiles "$N_MEM" -- "$BIN" run "$rows" -o "$OUT/batchfiles.out.jsonl" \
        --base-url mock --batch --dry-run --no-progress
}

# pyarrow in the bench venv, to write the Parquet input (another tool than batchgen).
pyarrow_venv() {
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" >&2 || return 1
    "$VENV/bin/python" -c "import pyarrow" 2>/dev/null && return 0
    log "pip install pyarrow into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check pyarrow >&2
}

# The N_MEM rows as a Parquet file written by pyarrow: the run reads it, and the export writes
# it back as Parquet with the results; both in flat memory.
scenario_parquet() {
    local rows pq=$OUT/rows-$N_MEM.parquet out=$OUT/parquet.out.jsonl
    rows=$(rows_file "$N_MEM")
    if [[ ! -s $pq ]]; then
        if ! pyarrow_venv; then
            log "parquet: SKIPPED, no pyarrow in $VENV (pip failed: no network?)"
            return 0
        fi
        log "writing $pq with pyarrow"
        "$VENV/bin/python" -c 'import sys, pyarrow.json as j, pyarrow.parquet as p
p.write_table(j.read_json(sys.argv[1]), sys.argv[2])' "$rows" "$pq.tmp" && mv "$pq.tmp" "$pq"
    fi
    start_mock 0
    run_batchgen parquet 0 64 "$pq" "$N_MEM" "$out"
    rm -f "$OUT/parquet.export.parquet"
    run_cmd parquet-export "$N_MEM" -- "$BIN" export "$out" --input "$pq" -o "$OUT/parquet.export.parquet"
    rm -f "$out" "$out.lock" "$OUT/parquet.export.parquet"
}

# Opt-in: an N_HUGE-row run on the mock and the resume of the done job; its files are deleted.
scenario_huge() {
    local rows out=$OUT/huge.out.jsonl free_kb
    free_kb=$(df -Pk "$OUT" | awk 'NR == 2 { print $4 }')
    if ((free_kb < 10 * 1024 * 1024)); then
        log "huge: SKIPPED, under 10 GB free in $OUT"
        return 0
    fi
    start_mock 0
    rows=$(rows_file "$N_HUGE")
    run_batchgen huge 0 64 "$rows" "$N_HUGE" "$out"
    run_batchgen huge-resume 0 64 "$rows" "$N_HUGE" "$out" resume
    rm -f "$rows" "$out" "$out.lock" "$out".prev*
}

for s in "${SCENARIOS[@]}"; do
    case "$s" in
        merge) scenario_merge ;;
        report) scenario_report ;;
        batchfiles) scenario_batchfiles ;;
        parquet) scenario_parquet ;;
        huge) scenario_huge ;;
        c64) scenario_fast c64 64 ;;
        c256) scenario_fast c256 256 ;;
        slow) scenario_slow ;;
        nginx) scenario_nginx ;;
        memory) scenario_memory ;;
        resume) scenario_resume ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Report.
HEADER=$OUT/header.txt
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(uname -a)"
    echo "nproc: $(nproc); memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ -n $BIN_GIVEN ]]; then
        echo "rustc: $(rustc --version); batchgen: $BIN_GIVEN (--bin), $("$BIN" --version 2>/dev/null || echo '?')"
    else
        echo "rustc: $(rustc --version); batchgen: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (src modified)')"
    fi
    echo "wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)$(command -v oha >/dev/null && echo "; oha: $(oha --version 2>&1 | head -1)")"
    if [[ $PY_OK == 1 ]]; then
        echo "python: $("$VENV/bin/python" --version 2>&1), openai $OPENAI_VERSION (AsyncOpenAI + asyncio.Semaphore)"
    else
        echo "python: baseline skipped"
    fi
    echo "mode: $([[ $QUICK == 1 ]] && echo quick || echo full); $REPEAT alternating run(s) of wrk and batchgen in c64/c256/slow, $REPEAT of resume, median shown; wrk/oha duration $WRK_DURATION, -t2; endpoint: batchgen mock-server (release) on 127.0.0.1; every tool shares the 2 cores with the mock"
    echo "rows/s for wrk/oha = their requests/s; CPU s = user+sys of the tool (time -v); mock CPU s = the mock-server's CPU during that run"
} >"$HEADER"
rc=0
$REPORT table "$RESULTS" --md "$OUT/results.md" --header-file "$HEADER" || rc=$?
log "Markdown table: $OUT/results.md"
exit "$rc"
