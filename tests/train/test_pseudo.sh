#!/bin/bash
# tests/train/test_pseudo.sh — tools/train/pseudo.sh, the stage-2 pseudo-labels, on small
# phantoms: two CT atlases (subjects 2-3) imported into a temporary library label an unlabelled
# MR T1 series (subject 1) with METHOD=atlas and with METHOD=both (the tiny test bundle fused with
# the atlases). Each SEG lands as OUT/subject-001/mr-t1.dcm with no partial file left, its liver
# is above a Dice floor against the phantom's truth (read here only), source.json names the
# method, the bundle (as an absolute path) and the atlases; a second run keeps what exists;
# METHOD=both without MODEL, with a MODEL that is no bundle or with FUSION, or an unknown
# METHOD is refused (exit 2) before anything runs.
# usage: test_pseudo.sh SEGNODE SEGNODE_PHANTOM PSEUDO_SH SEG_DICE_PY BUNDLE [FLOOR_ATLAS FLOOR_BOTH]
set -u
SEGNODE=$1 PHANTOM=$2 PSEUDO=$3 SEGDICE=$4 BUNDLE=$5
FLOOR_ATLAS=${6:-0.90} FLOOR_BOTH=${7:-0.89}   # measured 0.956 / 0.944, less 0.05
PY=/usr/bin/python3
$PY -c "import pydicom, numpy" 2>/dev/null || { echo "SKIP: pydicom/numpy missing"; exit 77; }
TMP=$(mktemp -d /tmp/segnode-pseudo.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

"$PHANTOM" --out "$TMP/atl" --subjects 2 --first 2 --modalities ct --size small --quiet ||
    { echo "phantom atlases failed"; exit 1; }
"$PHANTOM" --out "$TMP/target" --subjects 1 --first 1 --modalities mr-t1 --size small --quiet ||
    { echo "phantom target failed"; exit 1; }
printf '[node]\nae_title = PSEUDOT\nport = 13590\nstorage = %s/store\nhttp_port = 0\n' "$TMP" > "$TMP/node.conf"
"$SEGNODE" -c "$TMP/node.conf" atlas import --phantom "$TMP/atl" > "$TMP/import.log" 2>&1 ||
    { echo "atlas import failed"; cat "$TMP/import.log"; exit 1; }
GT=$TMP/target/subject-001/seg/mr-t1.dcm
export SEGNODE CONFIG=$TMP/node.conf ATLASES=subject-002,subject-003

liver() { "$PY" "$SEGDICE" "$GT" "$1" Liver | awk '{ print $3 }'; }
source_field() { "$PY" -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(",".join(a["name"] for a in v) if isinstance(v, list) else v)' "$1" "$2"; }

for method in atlas both; do
    out=$TMP/out-$method floor=$FLOOR_ATLAS
    [ $method = both ] && floor=$FLOOR_BOTH
    if [ $method = both ]; then
        METHOD=both MODEL=$BUNDLE sh "$PSEUDO" mr-t1 "$out" "$TMP/target" > "$TMP/$method.log" 2>&1
    else
        sh "$PSEUDO" mr-t1 "$out" "$TMP/target" > "$TMP/$method.log" 2>&1
    fi
    rc=$?
    [ $rc = 0 ] && ok "$method: pseudo.sh exit 0" || { fail "$method: pseudo.sh exit $rc"; tail -5 "$TMP/$method.log"; continue; }
    seg=$out/subject-001/mr-t1.dcm
    [ -f "$seg" ] && ok "$method: $seg written" || { fail "$method: no $seg"; continue; }
    [ -z "$(ls "$out/subject-001" | grep partial)" ] && ok "$method: no partial file left" ||
        fail "$method: a partial file is left"
    d=$(liver "$seg")
    echo "# $method: liver Dice $d against the truth"
    ge "$d" "$floor" && ok "$method: liver Dice $d >= $floor" || fail "$method: liver Dice $d < $floor"
    m=$(source_field "$out/source.json" method) a=$(source_field "$out/source.json" atlases)
    [ "$m" = $method ] && ok "$method: source.json method $m" || fail "$method: source.json method '$m'"
    [ "$a" = "subject-002,subject-003" ] && ok "$method: source.json atlases $a" || fail "$method: source.json atlases '$a'"
    mo=$(source_field "$out/source.json" model)
    want=None
    [ $method = both ] && want=$(realpath "$BUNDLE")
    [ "$mo" = "$want" ] && ok "$method: source.json model $mo" || fail "$method: source.json model '$mo', want '$want'"
done

# a second run keeps the existing label (no segment run, file untouched)
before=$(stat -c %Y.%s "$TMP/out-atlas/subject-001/mr-t1.dcm" 2>/dev/null)
sh "$PSEUDO" mr-t1 "$TMP/out-atlas" "$TMP/target" > "$TMP/again.log" 2>&1
rc=$?
after=$(stat -c %Y.%s "$TMP/out-atlas/subject-001/mr-t1.dcm" 2>/dev/null)
[ $rc = 0 ] && [ -n "$before" ] && [ "$before" = "$after" ] && ! grep -q "subject-001/mr-t1:" "$TMP/again.log" &&
    ok "a second run keeps the existing label" || fail "a second run: rc $rc, $before -> $after"

refuse() {   # description, expected message, env...
    local what=$1 msg=$2
    shift 2
    env "$@" sh "$PSEUDO" mr-t1 "$TMP/out-refused" "$TMP/target" > "$TMP/refused.log" 2>&1
    local rc=$?
    if [ $rc = 2 ] && grep -q "$msg" "$TMP/refused.log" && [ ! -e "$TMP/out-refused" ]; then
        ok "$what: refused (exit 2, '$msg'), nothing written"
    else
        fail "$what: exit $rc, $(cat "$TMP/refused.log")"
    fi
}
refuse "METHOD=both without MODEL" "needs MODEL" METHOD=both
refuse "METHOD=both with FUSION" "no FUSION" METHOD=both MODEL="$BUNDLE" FUSION=jlf
refuse "an unknown METHOD" "atlas or both" METHOD=net
refuse "METHOD=both with a MODEL that is no bundle" "no model.json" METHOD=both MODEL="$TMP/atl"

[ $fails = 0 ] && echo "all passed" || echo "$fails failed"
[ $fails = 0 ]
