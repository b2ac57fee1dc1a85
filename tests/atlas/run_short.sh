#!/bin/sh
# tests/atlas/run_short.sh PHANTOM ATLAS_EVAL LABELS DIR — the short leave-one-out check (ctest
# atlas_loo_short): 3 small phantom subjects, CT atlases of two, targets CT and MR T1 of the
# third; then the same MR T1 target with the two atlases' CT in the portal-venous phase
# (segnode-phantom --contrast: same anatomy and ground truth), the library tests/atlas/README.md
# recommends for MR. Lower bounds sit ~0.05-0.10 under what this seed measures (plain: liver CT
# 0.96, liver MR T1 0.93-0.94, right kidney MR T1 0.80-0.86; contrast: MR T1 myocardium 0.82 with
# mv and jlf where plain atlases give 0.52, liver 0.95): they catch a broken registration or fusion (affine-only gives liver MR
# ~0.87), not small regressions.
set -e
phantom=$1; ev=$2; labels=$3; dir=$4
if [ ! -f "$dir/subject-003/seg/mr-t1.dcm" ]; then
  rm -rf "$dir"
  "$phantom" --out "$dir" --subjects 3 --modalities ct,mr-t1 --size small --seed 7 >/dev/null
fi
"$ev" --fast --label-table "$labels" --modalities ct,mr-t1 \
  --check 8:ct:mv:0.90 --check 8:mr-t1:single:0.88 --check 8:mr-t1:mv:0.88 \
  --check 8:mr-t1:local:0.88 --check 8:mr-t1:jlf:0.88 --check 11:mr-t1:mv:0.70 \
  "$dir/subject-003" "$dir/subject-001" "$dir/subject-002"
if [ ! -f "$dir-contrast/subject-002/seg/ct.dcm" ]; then
  rm -rf "$dir-contrast"
  "$phantom" --out "$dir-contrast" --subjects 2 --modalities ct --contrast --size small --seed 7 >/dev/null
fi
exec "$ev" --fast --label-table "$labels" --modalities mr-t1 \
  --check 8:mr-t1:mv:0.90 --check 14:mr-t1:mv:0.75 --check 14:mr-t1:jlf:0.75 \
  "$dir/subject-003" "$dir-contrast/subject-001" "$dir-contrast/subject-002"
