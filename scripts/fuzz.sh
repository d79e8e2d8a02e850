#!/usr/bin/env bash
# Build the libFuzzer targets of fuzz/ with clang (-fsanitize=fuzzer,address,
# undefined), run each for a set time, and report executions, coverage and
# crash inputs.  Not part of the test command: the inputs that ever failed go
# to tests/data/fuzz_regression/, which the test command replays under
# ASan+UBSan (ctest sanitize.asan_ubsan).
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
#     targets: fuzz_model_load (loader + one evaluation), fuzz_xml_deserialize
#     (OpenMM XmlSerializer reading a SmoothFlowForce); default both.
#   SMOOTHFLOW_FUZZ_DIR  build and work folder (default /tmp/smoothflow-fuzz)
#   OPENMM_DIR           OpenMM prefix (include/, lib/); default: the one of
#                        the Python that scripts/setup.sh prepares
#
# Seeds: tests/data/*.safetensors and tests/data/fuzz_regression/{model,xml}.
# The growing corpus is kept in $SMOOTHFLOW_FUZZ_DIR/corpus between runs.
# Exits 1 when a target found a crash (its input is listed; copy it into
# tests/data/fuzz_regression/<model|xml>/ with the fix).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_model_load fuzz_xml_deserialize)
work=${SMOOTHFLOW_FUZZ_DIR:-/tmp/smoothflow-fuzz}
CC=${CC_FUZZ:-clang}
CXX=${CXX_FUZZ:-clang++}
command -v "$CC" >/dev/null || { echo "fuzz.sh: $CC not found (apt-get install clang)" >&2; exit 2; }

arch=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
blas_dir=/usr/lib/$arch/openblas-pthread
cblas_inc=/usr/include/$arch/openblas-pthread
[ -f "$blas_dir/libopenblas.so" ] || { echo "fuzz.sh: no $blas_dir/libopenblas.so (libopenblas-pthread-dev)" >&2; exit 2; }

mkdir -p "$work/obj" "$work/crashes" "$work/corpus/model" "$work/corpus/xml"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
# The libraries carry coverage instrumentation; only the final link adds
# libFuzzer's main.
cov="-fsanitize=fuzzer-no-link"
core_objs=()
for src in "$here"/core/src/*.c; do
    obj="$work/obj/core_$(basename "${src%.c}").o"
    "$CC" -std=c11 $san $cov -DSF_STATIC -DSMOOTHFLOW_OPENBLAS -I"$here/core/include" \
        -I/usr/include/cjson -I"$cblas_inc" -c "$src" -o "$obj"
    core_objs+=("$obj")
done
libs=(-L"$blas_dir" -Wl,-rpath,"$blas_dir" -lopenblas -lcjson -lpthread -lm)

build_model_load() {
    "$CC" -std=c11 $san -fsanitize=fuzzer -DSF_STATIC -I"$here/core/include" \
        "$here/fuzz/fuzz_model_load.c" "${core_objs[@]}" "${libs[@]}" -o "$work/fuzz_model_load"
}

openmm_dir() {
    if [ -n "${OPENMM_DIR:-}" ]; then echo "$OPENMM_DIR"; return; fi
    local venv
    venv=$("$here/scripts/setup.sh" --quiet | tail -n 1)
    "$venv/bin/python" -c "import os, openmm.version as v; print(os.path.dirname(os.path.abspath(v.openmm_library_path)))"
}

build_xml_deserialize() {
    local omm
    omm=$(openmm_dir)
    local inc=(-I"$omm/include" -I"$here/openmmapi/include" -I"$here/openmmapi/src"
               -I"$here/serialization/include" -I"$here/serialization/src" -I"$here/core/include")
    local objs=()
    for src in "$here"/openmmapi/src/*.cpp "$here"/serialization/src/*.cpp; do
        local obj="$work/obj/plugin_$(basename "${src%.cpp}").o"
        "$CXX" -std=c++17 $san $cov -D_GLIBCXX_USE_CXX11_ABI=1 -DSF_STATIC "${inc[@]}" -c "$src" -o "$obj"
        objs+=("$obj")
    done
    "$CXX" -std=c++17 $san -fsanitize=fuzzer -D_GLIBCXX_USE_CXX11_ABI=1 -DSF_STATIC "${inc[@]}" \
        "$here/fuzz/fuzz_xml_deserialize.cpp" "${objs[@]}" "${core_objs[@]}" \
        -L"$omm/lib" -Wl,-rpath,"$omm/lib" -lOpenMM "${libs[@]}" -o "$work/fuzz_xml_deserialize"
}

status=0
summary=()
for target in "${targets[@]}"; do
    case $target in
        fuzz_model_load)
            build_model_load
            kind=model
            seeds=("$here"/tests/data/fuzz_regression/model)
            for f in "$here"/tests/data/*.safetensors; do cp -n "$f" "$work/corpus/model/"; done
            extra=(-dict="$here/fuzz/model.dict");;
        fuzz_xml_deserialize)
            build_xml_deserialize
            kind=xml
            seeds=("$here"/tests/data/fuzz_regression/xml)
            extra=();;
        *) echo "fuzz.sh: unknown target $target" >&2; exit 2;;
    esac
    log="$work/$target.log"
    before=$(ls "$work/crashes" | wc -l)
    echo "=== $target: ${seconds} s (log $log)"
    # -timeout: an input taking 10 s is a finding (a hang); -rss_limit_mb: so
    # is one that needs 2 GB.  The first corpus folder receives new inputs.
    "$work/$target" "$work/corpus/$kind" "${seeds[@]}" "${extra[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/crashes/$target-" >"$log" 2>&1 || true
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov_n=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo "?")
    ft_n=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo "?")
    corp=$(ls "$work/corpus/$kind" | wc -l)
    new=$(( $(ls "$work/crashes" | wc -l) - before ))
    line="$target: ${execs} executions in ${seconds} s, cov ${cov_n} edges, ft ${ft_n} features, corpus ${corp} inputs, ${new} new crash inputs"
    summary+=("$line")
    echo "$line"
    if [ "$new" -gt 0 ] || grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|deadly signal' "$log"; then
        status=1
        grep -E -m 5 'ERROR:|runtime error|fuzz_(model_load|xml_deserialize):' "$log" || true
        ls -1 "$work/crashes"/"$target"-* 2>/dev/null | sed 's/^/  crash input: /' || true
    fi
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $status
