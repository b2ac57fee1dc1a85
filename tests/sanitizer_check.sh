# tests/sanitizer_check.sh — sourced by the shell test libraries (tests/node/lib.sh,
# tests/cli/lib.sh): in a sanitizer build (SEGNODE_SANITIZE) a report from a daemon we started
# lands in its log, not in any exit status the test sees, so the test's EXIT trap calls
# sanitizer_check to fail it. It does not replace ASAN_OPTIONS=log_path (tools/run-tests uses
# that too, for the reports that go elsewhere).
#   sanitizer_check DIR   0 when no text file under DIR holds an ASan/LSan/UBSan report; else
#                         prints the reports and returns 1.
sanitizer_check() {
    local hits f
    hits=$(grep -rlIE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$1" 2>/dev/null)
    [ -z "$hits" ] && return 0
    for f in $hits; do
        echo "FAIL - sanitizer report in ${f#"$1"/}:"
        grep -E -A40 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$f" | head -80
    done
    return 1
}
