#!/bin/sh
# tests/atlas/run_short.sh PHANTOM ATLAS_EVAL LABELS DIR — the short leave-one-out check (ctest
# atlas_loo_short): 3 small phantom subjects; the plain CT atlases of subjects 1-2 on the CT
# target of subject 3; then a library holding both phases of subjects 1-2 (plain CT and the
# portal-venous CT, segnode-phantom --contrast: same anatomy and ground truth) on the MR T1
# target, one atlas per subject kept by atlas_distinct (the better-matching phase: contrast for
# MR, tests/atlas/README.md). Lower bounds sit ~0.05-0.10 under what this seed measures (liver CT
# 0.96; MR T1: liver 0.93-0.95, right kidney 0.83-0.86, myocardium 0.82 with mv and jlf where
# the plain atlases alone give 0.52): they catch a broken registration or fusion (affine-only
# gives liver MR ~0.87) and a phase choice gone wrong (the myocardium bound and the kept list),
# not small regressions. The MR T1 run also scores the node's intensity refinement (rows
# local-em; measured liver 0.96, myocardium 0.92 against 0.86 unrefined): bounds 0.90 and 0.80.
set -e
phantom=$1; ev=$2; labels=$3; dir=$4
if [ ! -f "$dir/subject-003/seg/mr-t1.dcm" ]; then
  rm -rf "$dir"
  "$phantom" --out "$dir" --subjects 3 --modalities ct,mr-t1 --size small --seed 7 >/dev/null
fi
"$ev" --fast --label-table "$labels" --modalities ct --check 8:ct:mv:0.90 \
  "$dir/subject-003" "$dir/subject-001" "$dir/subject-002"
if [ ! -f "$dir-contrast/subject-002/seg/ct.dcm" ]; then
  rm -rf "$dir-contrast"
  "$phantom" --out "$dir-contrast" --subjects 2 --modalities ct --contrast --size small --seed 7 >/dev/null
fi
out=$("$ev" --fast --distinct --em --label-table "$labels" --modalities mr-t1 \
  --check 8:mr-t1:single:0.88 --check 8:mr-t1:mv:0.90 --check 8:mr-t1:local:0.88 --check 8:mr-t1:jlf:0.88 \
  --check 11:mr-t1:mv:0.70 --check 14:mr-t1:mv:0.75 --check 14:mr-t1:jlf:0.75 \
  --check 8:mr-t1:local-em:0.90 --check 14:mr-t1:local-em:0.80 \
  "$dir/subject-003" "$dir/subject-001" "$dir/subject-002" "$dir-contrast/subject-001" "$dir-contrast/subject-002") || rc=$?
printf '%s\n' "$out"
# atlases 2 and 3 are the contrast phase: both kept, in either order
printf '%s\n' "$out" | grep -Eq '^# mr-t1: kept (2 3|3 2)$' || { echo "FAIL: atlas_distinct did not keep the contrast phase"; exit 1; }
exit ${rc:-0}
