#!/bin/bash
# tests/node/test_find.sh — C-FIND matching on the Required keys beyond names and UIDs, with
# findscu: Study Time (single values, ranges, fractions), Study ID (single, wildcard,
# case-sensitive), Patient's Birth Date, Patient's Sex and Referring Physician's Name, Series
# Number at SERIES level (an integer; a non-integer key gets A900),
# a Patient's Name stored with trailing empty components ("Doe^Jane^^^" found by "DOE^JANE"),
# Pending FF01 instead of FF00 when the request has a key the node does not support, the
# IMAGE level (SOP Instance UID list, SOP Class UID, Instance Number), answers across the
# node's fetch batches (150 instances of a series, each once and in order), and
# find_max_results (after a reload): more matches than that get A700, no partial answer.
# Ports 11340-11349.
# usage: test_find.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11340
. "$HERE/lib.sh"
need_ports $PORT

write_conf </dev/null
C="$TMP/node.conf"
R=1.2.826.0.1.3680043.10.1138.40
# study A: two series (numbers 5 and 12); B: a time with a fraction; C: the afternoon
gen_series "$TMP/in/a1" 1 --rows 16 --seed 41 --patient 'Doe^Jane^^^' --study $R.1 --series $R.1.1 \
    --study-time 073000 --study-id ABC-1 --series-number 5 >/dev/null &&
gen_series "$TMP/in/a2" 1 --rows 16 --seed 42 --patient 'Doe^Jane^^^' --study $R.1 --series $R.1.2 \
    --study-time 073000 --study-id ABC-1 --series-number 12 >/dev/null &&
gen_series "$TMP/in/b" 1 --rows 16 --seed 43 --patient 'ROE^RICHARD' --study $R.2 --series $R.2.1 \
    --study-time 083000.123 --study-id abc-2 --series-number 3 \
    --birth-date 19851231 --sex F --referring 'Welby^Marcus^^Dr.' >/dev/null &&
gen_series "$TMP/in/c" 1 --rows 16 --seed 44 --patient 'POE^EDGAR' --study $R.3 --series $R.3.1 \
    --study-time 140000 --study-id XYZ --series-number 1 >/dev/null ||
    { echo "gen_dicom.py series failed"; exit 1; }
start_node "$C" "$TMP/serve.log"

run storescu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP"/in/*/0001.dcm
expect_rc 0 "storescu of three studies (four series)"

# cfind LEVEL KEY... — findscu -v -S; $FIND = its output, $UIDS = the sorted Study (STUDY level)
# or Series (SERIES level) Instance UIDs of the Pending answers, space-separated.
cfind() {
    local level=$1 tag
    shift
    [ "$level" = SERIES ] && tag=0020,000e || tag=0020,000d
    findscu ${FINDSCU_LOG:--v} -S -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=$level \
        -k StudyInstanceUID -k SeriesInstanceUID "$@" >"$TMP/find.out" 2>&1
    RC=$?
    FIND=$(cat "$TMP/find.out")
    OUT=$FIND
    ERR=""
    UIDS=$(sed -n "s/^I: ($tag) UI \[\([0-9.]*\)\].*/\1/p" "$TMP/find.out" | sort | tr '\n' ' ' | sed 's/ $//')
}
# expect_uids WANT MSG
expect_uids() { if [ "$UIDS" = "$1" ]; then ok "$2"; else fail "$2: got '$UIDS', expected '$1'"; fi; }

# ---- Study Time ----------------------------------------------------------------------------
cfind STUDY -k StudyTime=0700-0900
expect_rc 0 "findscu StudyTime=0700-0900"
expect_uids "$R.1 $R.2" "StudyTime range 0700-0900 includes 07:30 and 08:30:00.123, excludes 14:00"
cfind STUDY -k StudyTime=0800-
expect_uids "$R.2 $R.3" "StudyTime 0800- (open end)"
cfind STUDY -k StudyTime=-0729
expect_uids "" "StudyTime -0729 excludes 07:30"
cfind STUDY -k StudyTime=-0730
expect_uids "$R.1" "StudyTime -0730 includes 07:30:00 (an end takes in its whole minute)"
cfind STUDY -k StudyTime=083000
expect_uids "$R.2" "StudyTime 083000 matches 083000.123"
cfind STUDY -k StudyTime=0900-1300
expect_uids "" "StudyTime 0900-1300 matches none"
cfind STUDY -k StudyTime
expect_uids "$R.1 $R.2 $R.3" "an empty StudyTime is universal"
expect_re "$FIND" '\(0008,0030\) TM \[083000\.123\]' "StudyTime returned as stored"

# ---- Study ID ------------------------------------------------------------------------------
cfind STUDY -k StudyID=ABC-1
expect_uids "$R.1" "StudyID single value"
cfind STUDY -k StudyID=abc-1
expect_uids "" "StudyID is case-sensitive"
cfind STUDY -k 'StudyID=abc*'
expect_uids "$R.2" "StudyID wildcard abc*"
cfind STUDY -k 'StudyID=*-?'
expect_uids "$R.1 $R.2" "StudyID wildcard *-?"

# ---- Series Number (SERIES level) ----------------------------------------------------------
cfind SERIES -k StudyInstanceUID=$R.1 -k SeriesNumber=12
expect_uids "$R.1.2" "SeriesNumber=12 finds the second series of study A"
expect_re "$FIND" '\(0020,0011\) IS \[12\]' "SeriesNumber returned"
cfind SERIES -k SeriesNumber=5
expect_uids "$R.1.1" "SeriesNumber=5 across all studies"
cfind SERIES -k SeriesNumber=05
expect_uids "$R.1.1" "SeriesNumber compared as an integer (05 is 5)"
cfind SERIES -k SeriesNumber=1
expect_uids "$R.3.1" "SeriesNumber=1 does not match 12"
FINDSCU_LOG=-d cfind SERIES -k 'SeriesNumber=1*'
expect_in "$FIND" "DIMSE Status                  : 0xa900" "a non-integer SeriesNumber gets A900"
expect_re "$FIND" "\(0000,0902\) LO \[Series Number key '1\*' is not an integer" "with an Error Comment"
expect_uids "" "and no matches"
expect_in "$(cat "$TMP/serve.log")" "C-FIND refused: Series Number key '1*' is not an integer" "and a log line"

# ---- Patient's Name with trailing empty components -----------------------------------------
for key in 'DOE^JANE' 'Doe^Jane' 'DOE^JANE*' 'Doe^Jane^^^' 'DOE^JANE^*'; do
    cfind STUDY -k "PatientName=$key"
    expect_uids "$R.1" "PatientName=$key finds Doe^Jane^^^"
done
cfind STUDY -k "PatientName=DOE^JAN"
expect_uids "" "PatientName=DOE^JAN finds nothing"

# ---- Patient's Birth Date, Patient's Sex, Referring Physician's Name (B: 19851231, F,
# Welby^Marcus^^Dr.; A and C: 19700101, O, none) ------------------------------------------
cfind STUDY -k PatientBirthDate=19800101-
expect_uids "$R.2" "PatientBirthDate=19800101- (a range)"
cfind STUDY -k PatientBirthDate=19700101
expect_uids "$R.1 $R.3" "PatientBirthDate=19700101"
cfind STUDY -k PatientSex=F
expect_uids "$R.2" "PatientSex=F"
cfind SERIES -k PatientSex=O
expect_uids "$R.1.1 $R.1.2 $R.3.1" "PatientSex=O at SERIES level"
cfind STUDY -k "ReferringPhysicianName=WELBY^MARCUS^^DR."
expect_uids "$R.2" "ReferringPhysicianName=WELBY^MARCUS^^DR. (a Person Name, case-insensitive)"
cfind STUDY -k "ReferringPhysicianName=Welby*"
expect_uids "$R.2" "ReferringPhysicianName=Welby*"
cfind STUDY -k "ReferringPhysicianName=WELBY^MARCUS"
expect_uids "" "ReferringPhysicianName=WELBY^MARCUS: the prefix Dr. is not an empty component"
cfind STUDY -k "ReferringPhysicianName=SMITH*"
expect_uids "" "ReferringPhysicianName=SMITH* finds nothing"

# ---- Pending FF00 / FF01 -------------------------------------------------------------------
cfind STUDY -k StudyID=XYZ -k PatientName -k NumberOfStudyRelatedInstances
expect_in "$FIND" "Find Response: 1 (Pending)" "supported keys only: Pending FF00"
expect_not_in "$FIND" "WarningUnsupportedOptionalKeys" "no FF01 without an unsupported key"
cfind STUDY -k StudyID=XYZ -k InstitutionName
expect_uids "$R.3" "an unsupported key does not change the matches"
expect_in "$FIND" "Find Response: 1 (Pending: WarningUnsupportedOptionalKeys)" \
    "an unsupported key (InstitutionName): Pending FF01"
expect_re "$FIND" '\(0008,0080\) LO \(no value available\)' "and it comes back zero-length"
cfind STUDY -k StudyID=XYZ -k "NumberOfStudyRelatedSeries=2"
expect_in "$FIND" "(Pending: WarningUnsupportedOptionalKeys)" \
    "a value for a key returned but not matched (NumberOfStudyRelatedSeries): FF01"
cfind STUDY -k StudyID=XYZ -k "NumberOfStudyRelatedSeries="
expect_not_in "$FIND" "WarningUnsupportedOptionalKeys" "the same key zero-length: FF00"
cfind STUDY -k StudyID=XYZ -k "ReferringPhysicianName=*" -k PatientSex=O -k PatientBirthDate=19700101
expect_not_in "$FIND" "WarningUnsupportedOptionalKeys" "Birth Date, Sex and Referring Physician are matched: FF00"
cfind STUDY -k StudyID=XYZ -k SeriesNumber
expect_in "$FIND" "(Pending: WarningUnsupportedOptionalKeys)" \
    "a SERIES key at STUDY level: FF01"
cfind SERIES -k SeriesNumber=1 -k SeriesDescription -k ModalitiesInStudy -k BodyPartExamined
expect_in "$FIND" "Find Response: 1 (Pending)" "SERIES level, supported keys: FF00"
expect_not_in "$FIND" "WarningUnsupportedOptionalKeys" "no FF01 at SERIES level"

# ---- IMAGE level (SOP Instance UID list, SOP Class UID, Instance Number) ------------------
cfind IMAGE -k "SeriesInstanceUID=$R.1.1" -k SOPInstanceUID -k SOPClassUID -k InstanceNumber -k PatientName
expect_rc 0 "IMAGE level by Series Instance UID"
n=$(printf '%s\n' "$FIND" | grep -c "Find Response: .* (Pending)")
if [ "$n" = 1 ]; then ok "one instance in series $R.1.1"; else fail "IMAGE level: $n answers"; fi
expect_re "$FIND" "\(0008,0018\) UI \[$R.1.1.1\]" "its SOP Instance UID"
expect_re "$FIND" '\(0008,0016\) UI (=CTImageStorage|\[1.2.840.10008.5.1.4.1.1.2\])' "its SOP Class UID (CT Image Storage)"
expect_re "$FIND" '\(0020,0013\) IS \[1 ?\]' "its Instance Number"
expect_re "$FIND" '\(0010,0010\) PN \[Doe\^Jane' "and the study's keys"
cfind IMAGE -k "StudyInstanceUID=$R.1" -k "SOPInstanceUID=$R.1.2.1\\$R.2.1.1"
n=$(printf '%s\n' "$FIND" | grep -c "Find Response: .* (Pending)")
if [ "$n" = 1 ] && printf '%s' "$FIND" | grep -q "UI \[$R.1.2.1\]"; then
    ok "a SOP Instance UID list within one study: the one of that study"
else fail "SOP Instance UID list: $n answers"; fi
cfind IMAGE -k "StudyInstanceUID=$R.1" -k "InstanceNumber=2"
n=$(printf '%s\n' "$FIND" | grep -c "Find Response: .* (Pending)")
if [ "$n" = 0 ]; then ok "Instance Number 2 matches nothing"; else fail "Instance Number 2: $n answers"; fi
FINDSCU_LOG=-d cfind IMAGE -k "InstanceNumber=x"
expect_re "$FIND" "0xa900" "an Instance Number key that is not an integer: A900"

# ---- answers streamed 64 at a time: 150 instances of one series, each once, in order -------
gen_series "$TMP/in/big" 150 --rows 8 --seed 45 --patient 'BIG^SERIES' --study $R.4 --series $R.4.1 \
    --study-time 160000 --study-id BIG --series-number 2 >/dev/null ||
    { echo "gen_dicom.py series failed"; exit 1; }
run storescu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP"/in/big/*.dcm
expect_rc 0 "storescu of 150 instances"
cfind IMAGE -k "SeriesInstanceUID=$R.4.1" -k SOPInstanceUID -k InstanceNumber
n=$(printf '%s\n' "$FIND" | grep -c "Find Response: .* (Pending)")
got=$(sed -n 's/^I: (0020,0013) IS \[\([0-9]*\) *\].*/\1/p' "$TMP/find.out" | tr '\n' ' ')
want=$(seq 1 150 | tr '\n' ' ')
if [ "$n" = 150 ] && [ "$got" = "$want" ]; then ok "IMAGE level: 150 answers (three batches), in Instance Number order"
else fail "IMAGE level over 150 instances: $n answers, numbers '$got'"; fi
nuid=$(sed -n "s/^I: (0008,0018) UI \[\($R.4.1.[0-9]*\)[^]]*\].*/\1/p" "$TMP/find.out" | sort -u | wc -l)   # odd lengths end in a NUL pad
if [ "$nuid" = 150 ]; then ok "150 distinct SOP Instance UIDs"; else fail "$nuid distinct SOP Instance UIDs"; fi
expect_in "$FIND" "Received Final Find Response (Success)" "then Success"

# ---- find_max_results: more matches than that are refused (A700), read at each request --------
sed -i 's/^\(disk_min_free_mb = 0\)$/\1\nfind_max_results = 3/' "$TMP/node.conf"
kill -HUP "$NODE"
for _ in $(seq 1 50); do grep -q "SIGHUP: reloaded" "$TMP/serve.log" && break; sleep 0.1; done
cfind SERIES -k "SeriesInstanceUID=*"
expect_in "$FIND" "Received Final Find Response (Refused: OutOfResources)" \
    "five series with find_max_results = 3: A700"
expect_not_in "$FIND" "(Pending" "and no partial answer"
expect_in "$(cat "$TMP/serve.log")" "more than 3 matches (find_max_results); narrow the query" "the reason is logged"
cfind STUDY -k "StudyInstanceUID=$R.1\\$R.2\\$R.3"
expect_uids "$R.1 $R.2 $R.3" "three studies still answered"

stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
