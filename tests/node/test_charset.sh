#!/bin/bash
# tests/node/test_charset.sh — text outside ASCII. Six studies, each sent in its own Specific
# Character Set (Latin-1, Greek, Japanese under ISO 2022, UTF-8, none with 8-bit bytes, an
# unknown Defined Term): every stored file keeps its bytes; the index holds UTF-8, so
# `segnode series --json` shows the names as they read; C-FIND matches keys sent in Latin-1,
# Greek, UTF-8 or Japanese ISO 2022 and answers in the request's character set when that can
# carry the answer, else in UTF-8 (ISO_IR 192); keys it cannot read get C000. Ports 11330-11339.
# usage: test_charset.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11330
. "$HERE/lib.sh"
need_ports $PORT

write_conf </dev/null
C="$TMP/node.conf"
"$PY" "$HERE/gen_dicom.py" charset "$TMP/cs" || { echo "gen_dicom.py charset failed"; exit 1; }
start_node "$C" "$TMP/serve.log"

run storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/cs"/*.dcm
expect_rc 0 "storescu of six instances in six character sets"
n=$(printf '%s\n' "$ERR$OUT" | grep -c "Received Store Response (Success)")
if [ "$n" = 6 ]; then ok "6 Success responses"; else fail "Success responses: $n of 6"; fi
verify "$C" "$TMP/storage" --sent "$TMP/cs" --series 6

# ---- the index holds UTF-8 ----------------------------------------------------------------
run "$SEGNODE" -c "$C" --json series
expect_rc 0 "segnode series --json"
EXPECT=$(cd "$HERE" && "$PY" -c "import json, gen_dicom as g; print(json.dumps({'PID-CS-' + c[0].upper(): c[4] for c in g.CHARSET_CASES}))")
py_check "every Patient's Name indexed in UTF-8 as it reads" \
    "{s['patient_id']: s['patient_name'] for s in d} == $EXPECT"
py_check "Study-level text too: the Greek series' description" \
    "[s['series_description'] for s in d if s['patient_id'] == 'PID-CS-GREEK'] == ['charset greek']"
expect_in "$(cat "$TMP/serve.log")" "Specific Character Set 'ISO_IR 999' not converted to UTF-8" \
    "the unknown character set is logged"

# cfind KEY... — C-FIND at STUDY level with the answers in $TMP/rsp; $OUT = find_answers.py's JSON
cfind() {
    rm -rf "$TMP/rsp" && mkdir -p "$TMP/rsp"
    findscu -v -S -aet MODALITY -aec SEGNODE -X -od "$TMP/rsp" 127.0.0.1 $PORT \
        -k QueryRetrieveLevel=STUDY -k PatientID -k StudyDescription -k StudyInstanceUID "$@" \
        >"$TMP/find.out" 2>&1
    RC=$?
    FIND=$(cat "$TMP/find.out")
    run "$PY" "$HERE/find_answers.py" "$TMP/rsp"
}
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }

cfind -k "PatientName=*"
expect_rc 0 "C-FIND without a character set"
py_check "six answers" "len(d) == 6"
py_check "non-ASCII answers in UTF-8, named ISO_IR 192" \
    "all(a['charset'] == 'ISO_IR 192' and a['name'] == $EXPECT[a['id']] for a in d if a['id'] not in ('PID-CS-UNKNOWN',))"
py_check "an ASCII answer names no character set" \
    "[a['charset'] for a in d if a['id'] == 'PID-CS-UNKNOWN'] == [''] and [a['name'] for a in d if a['id'] == 'PID-CS-UNKNOWN'] == ['Ren?^Luc']"

cfind -k "SpecificCharacterSet=ISO_IR 100" -k "PatientName=$(printf 'M\xfcller*')"
py_check "Latin-1 key matches; answered in Latin-1 (ISO_IR 100) byte for byte" \
    "len(d) == 1 and d[0]['charset'] == 'ISO_IR 100' and d[0]['name_hex'] == '$(hex "$(printf 'M\xfcller^J\xfcrgen')")' and d[0]['desc_hex'] == '$(hex "$(printf 'Sch\xe4del nativ')")'"

cfind -k "SpecificCharacterSet=ISO_IR 100" -k "PatientName=*" -k "PatientID=PID-CS-GREEK"
py_check "a Greek answer to a Latin-1 request comes in UTF-8" \
    "len(d) == 1 and d[0]['charset'] == 'ISO_IR 192' and d[0]['name'] == 'Διονυσιος'"

cfind -k "SpecificCharacterSet=ISO_IR 126" -k "PatientName=$(printf '\xc4\xe9\xef\xed*')"
py_check "Greek (ISO_IR 126) key matches; answered in ISO_IR 126" \
    "len(d) == 1 and d[0]['charset'] == 'ISO_IR 126' and d[0]['name_hex'] == '$(printf 'Διονυσιος' | iconv -f UTF-8 -t ISO-8859-7 | od -An -tx1 | tr -d ' \n')'"

cfind -k "SpecificCharacterSet=ISO_IR 192" -k "PatientName=N??ez*"
py_check "UTF-8 key: '?' is one character (ñ is two bytes)" \
    "len(d) == 1 and d[0]['id'] == 'PID-CS-UTF8' and d[0]['name'] == 'Núñez^Sofía'"

cfind -k 'SpecificCharacterSet=\ISO 2022 IR 87' -k "PatientName=*=$(printf '\033$B;3ED\033(B')*"
py_check "Japanese key under ISO 2022 IR 87 matches the ideographic group; answered in UTF-8" \
    "len(d) == 1 and d[0]['id'] == 'PID-CS-JAPANESE' and d[0]['charset'] == 'ISO_IR 192' and d[0]['name'] == 'Yamada^Tarou=山田^太郎=やまだ^たろう'"

cfind -k "SpecificCharacterSet=ISO_IR 999" -k "PatientName=$(printf 'Ren\xe9*')"
expect_in "$FIND" "Received Final Find Response (Failed: UnableToProcess)" \
    "keys in an unknown character set: C000 (Unable to process)"
expect_in "$(cat "$TMP/serve.log")" "C-FIND refused: query keys not readable in character set 'ISO_IR 999'" \
    "the reason (also the Error Comment) is logged"

stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
