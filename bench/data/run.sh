#!/usr/bin/env bash
# Side-by-side data benchmark: `loopml data drift` vs Evidently 0.7 (DataDriftPreset) and
# `loopml data validate` vs Great Expectations 1.x (same suite), on the same generated Parquet
# files (BENCH_ROWS rows × 50 columns: 40 numeric, 10 categorical), each tool reading them from
# disk. Wall time and peak RSS of each process (/usr/bin/time), and whether per-column drift
# verdicts and per-expectation results agree. Prints Markdown tables and writes
# bench/data/results/<timestamp>.json. See README.md.
#
# Env: BENCH_ROWS (default 1000000), BENCH_TOOLS (default loopml,evidently,gx),
#      BENCH_REPEAT (runs of each Python tool, default 1), BENCH_LOOPML_REPEAT (default 3),
#      BENCH_PARITY_ROWS (small run where Evidently picks K-S / chi-square / Z; default 1000;
#      0 skips it), BENCH_WORK (data dir, default bench/data/work), LOOPML_BIN (default
#      target/release/loopml, built with cargo only when missing), BENCH_VENV (default
#      bench/data/.venv, made by setup.sh), BENCH_TIMEOUT_S (limit per tool run, default 3600).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rows=${BENCH_ROWS:-1000000}
tools=${BENCH_TOOLS:-loopml,evidently,gx}
repeat=${BENCH_REPEAT:-1}
loopml_repeat=${BENCH_LOOPML_REPEAT:-3}
parity_rows=${BENCH_PARITY_ROWS:-1000}
work_root=${BENCH_WORK:-$here/work}
venv=${BENCH_VENV:-$here/.venv}
timeout_s=${BENCH_TIMEOUT_S:-3600}
loopml_bin=${LOOPML_BIN:-$root/target/release/loopml}
export DO_NOT_TRACK=1 GX_ANALYTICS_ENABLED=false

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ ",$tools," == *",$1,"* ]]; }
posint() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0)); }

posint "$rows" || die "BENCH_ROWS must be a positive integer (got '$rows')"
posint "$repeat" || die "BENCH_REPEAT must be a positive integer"
posint "$loopml_repeat" || die "BENCH_LOOPML_REPEAT must be a positive integer"
[[ $parity_rows =~ ^[0-9]+$ ]] || die "BENCH_PARITY_ROWS must be a number (0 skips the parity run)"
((rows >= 1000)) || die "BENCH_ROWS must be at least 1000 (the suite expects ≥ 1000 rows)"
for t in ${tools//,/ }; do
  case $t in loopml | evidently | gx) ;; *) die "unknown tool '$t' in BENCH_TOOLS (loopml, evidently, gx)" ;; esac
done
command -v /usr/bin/time >/dev/null || die "/usr/bin/time (GNU time) is needed: apt-get install time"

# ------------------------------------------------------------------------------------------------
# Setup: the venv runs Evidently and GX, and gen.py (numpy, pyarrow, scipy) whatever the tools
BENCH_VENV=$venv bash "$here/setup.sh" || die "setup.sh failed"
py=$venv/bin/python

if has loopml; then
  if [[ ! -x $loopml_bin ]]; then
    [[ -z ${LOOPML_BIN:-} ]] || die "LOOPML_BIN=$LOOPML_BIN is not an executable"
    log "building loopml (cargo build --release -p loopml)"
    (cd "$root" && cargo build --release --quiet -p loopml) || die "cannot build loopml"
  fi
  "$loopml_bin" data drift --help >/dev/null 2>&1 || die "$loopml_bin has no 'data drift' command"
fi

# gen ROWS: makes (or reuses) work_root/ROWS with reference.parquet, current.parquet, design.json
gen() {
  local n=$1 dir=$work_root/$1
  if [[ -f $dir/design.json && -f $dir/reference.parquet && -f $dir/current.parquet ]] &&
    cmp -s "$here/gen.py" "$dir/gen.py.used"; then
    log "reusing data in $dir"
  else
    log "generating $n rows × 50 columns into $dir"
    mkdir -p "$dir"
    "$py" "$here/gen.py" "$dir" --rows "$n" || die "gen.py failed"
    cp "$here/gen.py" "$dir/gen.py.used"
  fi
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=$here/results/raw-$stamp
mkdir -p "$raw"
runs=$raw/runs.tsv
printf 'tool\tworkload\tscale\trun\trc\twall_s\tpeak_rss_kb\tout\n' >"$runs"

# timed TOOL WORKLOAD SCALE RUN OKRC OUT CMD...: runs CMD under /usr/bin/time and the time limit,
# stdout+stderr to OUT.log; appends a line to runs.tsv. OKRC: exit codes that count as success
# ("0" or "0,1"). Returns 1 on another exit code.
timed() {
  local tool=$1 workload=$2 scale=$3 run=$4 okrc=$5 out=$6
  shift 6
  local tf=$out.time rc=0 wall rss
  /usr/bin/time -f '%e %M' -o "$tf" timeout -k 10 "$timeout_s" "$@" >"$out.log" 2>&1 || rc=$?
  read -r wall rss < <(tail -n 1 "$tf") || true
  [[ $wall =~ ^[0-9.]+$ ]] || wall=NaN
  [[ $rss =~ ^[0-9]+$ ]] || rss=0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$workload" "$scale" "$run" "$rc" "$wall" "$rss" "$(basename "$out")" >>"$runs"
  if [[ ",$okrc," != *",$rc,"* ]]; then
    log "$tool $workload ($scale rows, run $run): FAILED (exit $rc); last lines:"
    tail -n 8 "$out.log" >&2 || true
    [[ $rc -eq 124 ]] && log "(timed out after ${timeout_s}s)"
    return 1
  fi
  log "$tool $workload ($scale rows, run $run): ${wall}s, peak RSS $((rss / 1024)) MB"
}

# drift_runs SCALE LOOPML_RUNS PY_RUNS
drift_runs() {
  local n=$1 lr=$2 pr=$3 dir=$work_root/$1 i
  if has loopml; then
    for ((i = 1; i <= lr; i++)); do
      timed loopml drift "$n" "$i" 0,1 "$raw/loopml-drift-$n-$i" \
        "$loopml_bin" data drift --reference "$dir/reference.parquet" --current "$dir/current.parquet" \
        --json "$raw/loopml-drift-$n-$i.json" || break
    done
  fi
  if has evidently; then
    for ((i = 1; i <= pr; i++)); do
      timed evidently drift "$n" "$i" 0 "$raw/evidently-drift-$n-$i" \
        "$py" "$here/evidently_drift.py" "$dir/reference.parquet" "$dir/current.parquet" \
        --columns "$dir/design.json" --out "$raw/evidently-drift-$n-$i.json" || break
    done
  fi
}

# validate_runs SCALE FILE LOOPML_RUNS PY_RUNS  (FILE: current or reference)
validate_runs() {
  local n=$1 f=$2 lr=$3 pr=$4 dir=$work_root/$1 i
  if has loopml; then
    for ((i = 1; i <= lr; i++)); do
      timed loopml "validate-$f" "$n" "$i" 0,1 "$raw/loopml-validate-$f-$n-$i" \
        "$loopml_bin" data validate "$dir/$f.parquet" --suite "$here/suite.yaml" \
        --json "$raw/loopml-validate-$f-$n-$i.json" || break
    done
  fi
  if has gx; then
    for ((i = 1; i <= pr; i++)); do
      timed gx "validate-$f" "$n" "$i" 0 "$raw/gx-validate-$f-$n-$i" \
        "$py" "$here/gx_validate.py" "$dir/$f.parquet" --suite "$here/suite.yaml" \
        --out "$raw/gx-validate-$f-$n-$i.json" || break
    done
  fi
}

# warm FILE...: reads the files once so that no tool pays for a cold page cache.
warm() { cat "$@" >/dev/null; }

{
  if has loopml; then
    printf 'loopml\t%s (binary modified %s)\t%s\n' "$("$loopml_bin" --version | head -1 | sed 's/^loopml //')" \
      "$(date -u -r "$loopml_bin" +%Y-%m-%dT%H:%M:%SZ)" "$loopml_bin"
  fi
  "$py" -c 'import importlib.metadata as m
for p in ("evidently", "great_expectations", "pandas", "pyarrow", "numpy", "scipy"):
    print(p, m.version(p), "python", sep="\t")'
} >"$raw/versions.tsv"

gen "$rows"
if ((parity_rows > 0 && parity_rows != rows)) && { has evidently || has loopml; }; then gen "$parity_rows"; fi

log "rows $rows; tools $tools; loopml runs $loopml_repeat, Python tool runs $repeat"
warm "$work_root/$rows"/*.parquet
drift_runs "$rows" "$loopml_repeat" "$repeat" || true
validate_runs "$rows" current "$loopml_repeat" "$repeat" || true
validate_runs "$rows" reference 1 1 || true
if ((parity_rows > 0 && parity_rows != rows)); then
  log "parity run at $parity_rows rows (K-S / chi-square / Z branch)"
  warm "$work_root/$parity_rows"/*.parquet
  drift_runs "$parity_rows" 1 1 || true
fi

mkdir -p "$here/results"
python3 "$here/report.py" --raw "$raw" --work "$work_root" --rows "$rows" --parity-rows "$parity_rows" \
  --tools "$tools" --root "$root" --json "$here/results/$stamp.json"
log "results: bench/data/results/$stamp.json (raw outputs in bench/data/results/raw-$stamp)"
