#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for SECONDS, and prints per target the
# executions, the time, the size of its working corpus and whether it found a failure.
#
#   fuzz/run.sh SECONDS [TARGET...]     (all targets when none is named)
#
# Needs nightly and cargo-fuzz (cargo install cargo-fuzz --locked). Each target starts from its
# committed inputs (fuzz/regressions/TARGET) and a working corpus (fuzz/corpus/TARGET, not
# committed) that grows across runs. A failing input is written to fuzz/artifacts/TARGET/.
set -euo pipefail

cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Without a sanitizer (the code under test is safe Rust; ASan would halve the executions), with
# debug assertions, so that integer overflows fail as they would in a debug build.
flags=(--sanitizer none --debug-assertions)
for target in "${targets[@]}"; do
    cargo +nightly fuzz build "${flags[@]}" "$target"
done

printf '%-20s %12s %8s %8s %s\n' target executions seconds corpus result
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=$(mktemp)
    start=$(date +%s)
    if cargo +nightly fuzz run "${flags[@]}" "$target" "corpus/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see fuzz/artifacts/$target/ and $log)"
        status=1
    fi
    elapsed=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    printf '%-20s %12s %8s %8s %s\n' "$target" "${runs:-?}" "$elapsed" "$corpus" "$result"
    [ "$result" = ok ] && rm -f "$log"
done
exit $status
