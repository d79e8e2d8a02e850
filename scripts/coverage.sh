#!/usr/bin/env bash
# Line and branch coverage of the C core (core/src/*.c and core/src/math/*.h)
# by its C test programs: the core's sources compiled with gcc --coverage -O0
# into test_core, test_model_config, test_threads, test_egnn,
# test_describe_free_form, test_alloc_failure and the
# fuzz target's replay driver (over tests/data/fuzz_regression/model and
# tests/data/*.safetensors), run, then gcov -b.  A header included by several
# sources is counted once: a line is executed, and a branch taken, when it is
# in any of them.
#
#   scripts/coverage.sh [folder]     (default /tmp/smoothflow-coverage)
#   SMOOTHFLOW_COVERAGE_CORPUS=dir   also replay a fuzz corpus folder (e.g.
#                                    /tmp/smoothflow-fuzz/corpus/model of scripts/fuzz.sh)
#   SMOOTHFLOW_COVERAGE_MIN=95       fail (exit 1) when the branch total is below this
#
# Prints a table per file, then one line "TOTAL: branches a/b = x %, lines
# c/d = y %"; the branch figure is gcov's "taken at least once".  Every line
# with an untaken branch is listed in <folder>/untaken-branches.txt.  Needs
# gcc, gcov (build-essential), libcjson-dev, libopenblas-pthread-dev and python3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:-/tmp/smoothflow-coverage}
arch=$(gcc -dumpmachine)
blas_dir=/usr/lib/$arch/openblas-pthread
cblas_inc=/usr/include/$arch/openblas-pthread
rm -rf "$work"
mkdir -p "$work/obj" "$work/gcov"

# Atomic counters: test_threads evaluates from 4 threads, and racing increments
# would leave gcov's derived arc counts inconsistent (phantom or lost branches).
cflags=(-std=c11 -O0 -g --coverage -fprofile-update=atomic -DSF_STATIC -I"$here/core/include" -I/usr/include/cjson)
objs=()
for src in "$here"/core/src/*.c; do
    obj="$work/obj/$(basename "${src%.c}").o"
    gcc "${cflags[@]}" -DSMOOTHFLOW_OPENBLAS -I"$cblas_inc" -c "$src" -o "$obj"
    objs+=("$obj")
done
libs=(-L"$blas_dir" -Wl,-rpath,"$blas_dir" -lopenblas -lcjson -lpthread -lm)
t="$here/core/tests"
gcc "${cflags[@]}" -DSMOOTHFLOW_TEST_DATA_DIR="\"$here/tests/data\"" "$t/test_core.c" "$t/model_builder.c" \
    "${objs[@]}" "${libs[@]}" -o "$work/test_core"
gcc "${cflags[@]}" "$t/test_model_config.c" "$t/model_builder.c" "${objs[@]}" "${libs[@]}" \
    -o "$work/test_model_config"
gcc "${cflags[@]}" "$t/test_threads.c" "$t/model_builder.c" "${objs[@]}" "${libs[@]}" -o "$work/test_threads"
gcc "${cflags[@]}" -DSMOOTHFLOW_OPENBLAS -I"$cblas_inc" -I"$here/core/src" \
    -DSMOOTHFLOW_TEST_DATA_DIR="\"$here/tests/data\"" "$t/test_egnn.c" "${objs[@]}" "${libs[@]}" -o "$work/test_egnn"
gcc "${cflags[@]}" "$t/test_describe_free_form.c" "$t/model_builder.c" "${objs[@]}" "${libs[@]}" \
    -o "$work/test_describe_free_form"
gcc "${cflags[@]}" "$here/fuzz/fuzz_model_load.c" "$here/fuzz/regression_main.c" "${objs[@]}" "${libs[@]}" \
    -o "$work/replay_model_load"
gcc "${cflags[@]}" -DSMOOTHFLOW_TEST_DATA_DIR="\"$here/tests/data\"" "$t/sanitize/test_alloc_failure.c" "${objs[@]}" \
    -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc "${libs[@]}" -o "$work/test_alloc_failure"

status=0
"$work/test_core" > "$work/test_core.log" || { echo "test_core failed (see $work/test_core.log)"; status=1; }
"$work/test_model_config" > "$work/test_model_config.log" 2>&1 || { echo "test_model_config failed (see $work/test_model_config.log)"; status=1; }
"$work/test_threads" > "$work/test_threads.log" || { echo "test_threads failed"; status=1; }
"$work/test_egnn" > "$work/test_egnn.log" 2>&1 || { echo "test_egnn failed (see $work/test_egnn.log)"; status=1; }
"$work/test_describe_free_form" > "$work/test_describe_free_form.log" 2>&1 || { echo "test_describe_free_form failed"; status=1; }
"$work/test_alloc_failure" > "$work/alloc_failure.log" || { echo "test_alloc_failure failed"; status=1; }
"$work/replay_model_load" "$here/tests/data/fuzz_regression/model" "$here"/tests/data/*.safetensors \
    ${SMOOTHFLOW_COVERAGE_CORPUS:+"$SMOOTHFLOW_COVERAGE_CORPUS"} > "$work/replay.log" || { echo "replay_model_load failed"; status=1; }

(cd "$work/gcov" && gcov -b -c --json-format -o "$work/obj" "$here"/core/src/*.c > /dev/null)
python3 - "$work/gcov" "$here/core/src" "$work/untaken-branches.txt" "${SMOOTHFLOW_COVERAGE_MIN:-0}" <<'PY' || status=1
import gzip, json, os, sys
gcov_dir, src, untaken_path, minimum = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3], float(sys.argv[4])
lines, branches = {}, {}   # (file, line) -> executed; (file, line, i) -> taken
for name in sorted(os.listdir(gcov_dir)):
    if not name.endswith(".gcov.json.gz"):
        continue
    with gzip.open(os.path.join(gcov_dir, name), "rt") as f:
        data = json.load(f)
    for entry in data["files"]:
        path = os.path.realpath(os.path.join(data.get("current_working_directory", ""), entry["file"]))
        if not path.startswith(src + os.sep):
            continue
        rel = os.path.relpath(path, os.path.dirname(os.path.dirname(src)))
        for ln in entry["lines"]:
            key = (rel, ln["line_number"])
            lines[key] = lines.get(key, False) or ln["count"] > 0
            for i, br in enumerate(ln.get("branches", [])):
                bkey = key + (i,)
                branches[bkey] = branches.get(bkey, False) or br["count"] > 0
files = sorted({k[0] for k in lines})
def pct(a, b):
    return 100.0 * a / b if b else 100.0
print(f"{'file':34s} {'lines':>16s} {'branches':>16s}")
tl = te = tb = tt = 0
rows = []
for f in files:
    l = [v for k, v in lines.items() if k[0] == f]
    b = [v for k, v in branches.items() if k[0] == f]
    tl += len(l); te += sum(l); tb += len(b); tt += sum(b)
    rows.append((f, sum(l), len(l), sum(b), len(b)))
    print(f"{f:34s} {sum(l):5d}/{len(l):5d} {pct(sum(l), len(l)):5.1f}% {sum(b):5d}/{len(b):5d} {pct(sum(b), len(b)):5.1f}%")
print(f"{'total':34s} {te:5d}/{tl:5d} {pct(te, tl):5.1f}% {tt:5d}/{tb:5d} {pct(tt, tb):5.1f}%")
least = sorted((r for r in rows if r[4]), key=lambda r: pct(r[3], r[4]))[:5]
print("least branch coverage: " + ", ".join(f"{r[0]} {pct(r[3], r[4]):.1f}%" for r in least))
per_line = {}
for (f, n, i), taken in branches.items():
    t = per_line.setdefault((f, n), [0, 0])
    t[0] += taken
    t[1] += 1
with open(untaken_path, "w") as out:
    for (f, n), (t, b) in sorted(per_line.items()):
        if t < b:
            out.write(f"{f}:{n}: {t} of {b} branches taken\n")
print(f"untaken branches by line: {untaken_path}")
print(f"TOTAL: branches {tt}/{tb} = {pct(tt, tb):.1f} %, lines {te}/{tl} = {pct(te, tl):.1f} % (C core, gcov -b)")
if pct(tt, tb) < minimum:
    print(f"branch coverage {pct(tt, tb):.1f} % is below SMOOTHFLOW_COVERAGE_MIN = {minimum:g} %")
    sys.exit(1)
PY
exit $status
