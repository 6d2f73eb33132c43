#!/usr/bin/env bash
# Checks of `dmabuf ls` against a real kernel's dma-bufs, run inside the guest (see run-in-guest.sh):
#
#   guest-checks.sh --cli PATH/DmaBuf.Cli.dll --fixture PATH/vgem-export [--tests PATH/Some.Tests.dll]... [--sample PATH/Sample.dll]...
#
# The fixture, a small C program, exports a vgem buffer, names it and holds it while `dmabuf ls` runs. Each --tests
# assembly runs its tests that carry a Kernel trait (Kernel=vgem, vivid, dma-heap, udmabuf...); each counts as one
# check. Each --sample (a sample program built against the packages) runs once: exit 0 passes, exit 3 (a device
# this kernel lacks) skips, anything else fails. A test this kernel cannot run (it lacks the feature) skips, and is reported on a line of its own,
# '@@kernel-test skipped NAME', as every test is with its result ('passed', 'failed'): the host's .ci/kernel-tests
# runs this in one guest per kernel and fails a test that skipped on every kernel. Ends with one line
# 'kernel-tests (KERNEL-RELEASE): N passed, N failed, N skipped'; exits 1 when a check failed.
set -uo pipefail

cli=""
fixture=""
tests=()
samples=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cli) cli=$2; shift 2 ;;
    --fixture) fixture=$2; shift 2 ;;
    --tests) tests+=("$2"); shift 2 ;;
    --sample) samples+=("$2"); shift 2 ;;
    *) echo "usage: guest-checks.sh --cli DmaBuf.Cli.dll --fixture vgem-export [--tests Some.Tests.dll]..." >&2; exit 2 ;;
  esac
done
[ -f "$cli" ] && [ -x "$fixture" ] || { echo "error: --cli and --fixture must name an existing dll and executable" >&2; exit 2; }
for dll in "${tests[@]}"; do
  [ -f "$dll" ] || { echo "error: --tests must name an existing dll (got '$dll')" >&2; exit 2; }
done
command -v jq >/dev/null || { echo "error: jq is needed (package jq)" >&2; exit 3; }

readonly NAME=dmabuf-ls-check
readonly SIZE=65536
passed=0
failed=0
work=$(mktemp -d)

check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then
    echo "ok   - $what"; passed=$((passed + 1))
  else
    echo "FAIL - $what"; failed=$((failed + 1))
  fi
}

dmabuf() { dotnet "$cli" "$@"; }
jqtrue() { jq -e "$@" >/dev/null 2>&1; } # jqtrue ARGS... FILE: the filter holds on the document

echo "kernel: $(uname -r)"
ls -l /dev/dri /dev/video* 2>&1 | sed 's/^/  /'

# 1. One holder: the fixture keeps the fd to itself (close-on-exec).
"$fixture" "$NAME" "$SIZE" -- dotnet "$cli" ls --json > "$work/one.out" 2> "$work/one.err"
rc=$?
check "fixture exports a named vgem dma-buf and 'dmabuf ls --json' exits 0 (rc=$rc)" test "$rc" -eq 0
info=$(head -1 "$work/one.out")
tail -n +2 "$work/one.out" > "$work/one.json"
pid=$(sed -n 's/.* pid=\([0-9]*\).*/\1/p' <<<"$info")
fd=$(sed -n 's/.* fd=\([0-9]*\).*/\1/p' <<<"$info")
size=$(sed -n 's/.* size=\([0-9]*\).*/\1/p' <<<"$info")
echo "  $info"
[ "$rc" -eq 0 ] || sed 's/^/  stderr: /' "$work/one.err"
buffer='[.buffers[] | select(.name == $n)]'
check "the output is one JSON document with buffers and totalBytes" \
  jqtrue '(.buffers | type == "array") and (.totalBytes | type == "number")' "$work/one.json"
check "exactly one buffer is named $NAME" \
  jqtrue --arg n "$NAME" "$buffer | length == 1" "$work/one.json"
check "its size is the exported size ($size bytes)" \
  jqtrue --arg n "$NAME" --argjson s "${size:-0}" "$buffer | .[0].size == \$s" "$work/one.json"
check "its one holder is the fixture (pid $pid, fd $fd, comm vgem-export)" \
  jqtrue --arg n "$NAME" --argjson p "${pid:-0}" --argjson f "${fd:-0}" \
  "$buffer | .[0].holders == [{\"pid\": \$p, \"comm\": \"vgem-export\", \"fd\": \$f}]" "$work/one.json"
check "it has an exporter, an inode and a count" \
  jqtrue --arg n "$NAME" "$buffer | .[0] | (.exporter | length > 0) and .inode > 0 and .count >= 1" "$work/one.json"
echo "  listed: $(jq -c --arg n "$NAME" "$buffer" "$work/one.json" 2>/dev/null)"

# 2. Two holders of one buffer: the command inherits the fd, so the ls process holds it too.
VGEM_EXPORT_INHERIT=1 "$fixture" "$NAME" "$SIZE" -- dotnet "$cli" ls --json > "$work/two.out" 2> "$work/two.err"
rc=$?
tail -n +2 "$work/two.out" > "$work/two.json"
pid2=$(head -1 "$work/two.out" | sed -n 's/.* pid=\([0-9]*\).*/\1/p')
check "a buffer held by two processes is one buffer with two holders (rc=$rc)" \
  jqtrue --arg n "$NAME" --argjson p "${pid2:-0}" \
  "$buffer | length == 1 and (.[0].holders | length == 2) and (.[0].holders | map(.pid) | index(\$p) != null)" "$work/two.json"

# 3. The table names the buffer and its holder.
"$fixture" "$NAME" "$SIZE" -- dotnet "$cli" ls > "$work/table.out" 2>&1
check "'dmabuf ls' prints the buffer's name and holder in its table" \
  bash -c "grep -q '$NAME' '$work/table.out' && grep -q 'vgem-export\[' '$work/table.out'"

# 4. Once the fixture exits, the buffer is gone.
dmabuf ls --json > "$work/after.json" 2>&1
check "after the holder exits the buffer is no longer listed" \
  jqtrue --arg n "$NAME" "$buffer | length == 0" "$work/after.json"

# 5. Held only through a mapping: the fixture closes its fd (and card) and keeps the mapping. `dmabuf ls` finds it in
#    /proc/PID/maps with the name the kernel shows (/dmabuf:NAME); with debugfs mounted (as the init script does) it
#    also reads dma_buf/bufinfo, which gives the exporter and the attached devices (none here).
VGEM_EXPORT_MAP_ONLY=1 "$fixture" "$NAME" "$SIZE" -- dotnet "$cli" ls --json > "$work/mapped.out" 2> "$work/mapped.err"
rc=$?
tail -n +2 "$work/mapped.out" > "$work/mapped.json"
pid3=$(head -1 "$work/mapped.out" | sed -n 's/.* pid=\([0-9]*\).*/\1/p')
check "a buffer held only through a mapping is listed, with no fd holder and the fixture's mapping (rc=$rc)" \
  jqtrue --arg n "$NAME" --argjson p "${pid3:-0}" --argjson s "$SIZE" \
  "$buffer | length == 1 and (.[0].holders | length == 0) and .[0].mappings == [{\"pid\": \$p, \"comm\": \"vgem-export\", \"bytes\": \$s}]" "$work/mapped.json"
if [ -r /sys/kernel/debug/dma_buf/bufinfo ]; then
  check "with debugfs, the mapped-only buffer has its exporter, size and an attached-devices list from bufinfo" \
    jqtrue --arg n "$NAME" --argjson s "$SIZE" \
    "$buffer | .[0] | .exporter == \"drm\" and .size == \$s and (.attachedDevices | type == \"array\")" "$work/mapped.json"
fi
echo "  mapped only: $(jq -c --arg n "$NAME" "$buffer" "$work/mapped.json" 2>/dev/null)"

# 6. The library's own tests that need a real kernel (any trait Kernel=...): the exporter contract on DRM PRIME (vgem),
#    dma-buf heap and udmabuf buffers, real dma-bufs between two processes over the channel, kernel fences, `dmabuf
#    ls` of buffers we export, vivid capturing into our buffers and exporting its own. Each test counts as one check.
#    A skip is not a failure here: it means this kernel lacks what the test needs; the host decides (the test must
#    have passed on another kernel).
skipped=0
run_assembly() { # run_assembly DLL
  local dll=$1 name t0 trc report total tpass tfail tskip mark
  name=$(basename "$dll" .dll)
  report=$work/$name.ctrf.json
  t0=$(date +%s)
  dotnet "$dll" -trait "Kernel=*" -noColor -result-ctrf "$report" > "$work/$name.out" 2>&1
  trc=$?
  if ! total=$(jq -e '.results.summary.tests' "$report" 2>/dev/null) || [ "$total" -eq 0 ]; then
    check "the kernel tests of $name ran (rc=$trc)" false
    tail -20 "$work/$name.out" | sed 's/^/  /'
    return
  fi
  tpass=$(jq '[.results.tests[] | select(.status == "passed")] | length' "$report")
  tskip=$(jq '[.results.tests[] | select(.status == "skipped")] | length' "$report")
  tfail=$(( total - tpass - tskip ))
  echo "  $name (rc=$trc, $(( $(date +%s) - t0 )) s): $total tests, $tpass passed, $tfail failed, $tskip skipped"
  grep -E '\[FAIL\]' -A 12 "$work/$name.out" | sed 's/^/  /' | head -120
  # One line per skip reason, with how many tests it skipped.
  jq -r '.results.tests[] | select(.status == "skipped") | .message // "" | split("\n")[0] | .[0:200]' "$report" \
    | sort | uniq -c | sed 's/^ */  skipped: /'
  jq -r --arg a "$name" '.results.tests[] | "@@kernel-test \(if .status == "passed" or .status == "skipped" then .status else "failed" end) \($a):\(.name)"' "$report"
  passed=$(( passed + tpass ))
  failed=$(( failed + tfail ))
  skipped=$(( skipped + tskip ))
  if [ "$tfail" -eq 0 ]; then mark="ok  "; else mark="FAIL"; fi
  echo "$mark - $name kernel tests: $tpass of $total passed ($tfail failed, $tskip skipped: this kernel lacks their feature)"
}
for dll in "${tests[@]}"; do run_assembly "$dll"; done

# 7. Samples built against the packages (samples/): the user's view of the pipeline, end to end on this kernel.
for dll in "${samples[@]}"; do
  name=$(basename "$dll" .dll)
  timeout 300 dotnet "$dll" > "$work/$name.out" 2>&1
  src=$?
  sed 's/^/  /' "$work/$name.out" | tail -5
  if [ "$src" -eq 3 ]; then
    echo "  sample $name skipped: this kernel lacks its device"; skipped=$((skipped + 1))
    echo "@@kernel-test skipped sample:$name"
  else
    check "sample $name runs against the packages (exit $src)" test "$src" -eq 0
    echo "@@kernel-test $([ "$src" -eq 0 ] && echo passed || echo failed) sample:$name"
  fi
done

rm -rf "$work"
echo "kernel-tests ($(uname -r)): $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
