#!/bin/sh
# tools/train/train.sh MODALITY — the one command that makes models/MODALITY (issue 8), seed 8:
#   ct                          the CT-only baseline (no adaptation, no augmentation)
#   mr-t1 | mr-t2 | cbct | pet  AccSeg stage 1 (600 iterations, every loss, GIN on S's input
#                               with p 0.5) and stage 2 (3000 iterations, GIN p 0.8)
# Data (tools/train/README.md): labelled CT in $CT, unlabelled target series in $TARGET_ROOT.
# Runs (logs, weights) go to $RUNS/MODALITY and $RUNS/MODALITY-ft; the bundle to $MODELS/MODALITY.
# With PSEUDO=DIR, stage 2 also trains on real target slices labelled by the atlas method
# (CT atlases only; tools/train/pseudo.sh makes DIR): the series come from $PSEUDO_ROOTS (comma
# list, default $TARGET_ROOT) and the run goes to $RUNS/MODALITY-pseudo-ft; PSEUDO_AUG=P is GIN's
# probability on those real slices (default 0.8 like the rest of stage 2; 0 for pet).
# REUSE_STAGE1=1 skips stage 1 when $RUNS/MODALITY already holds a finished one (same command,
# same seed).
# SPACING=MM and PATCH=N set the in-plane grid of both stages (default 4 mm, 64 x 64: the
# bundle's target_spacing and patch_size); S1_ARGS adds options to stage 1 only (for instance
# --dice-all-classes, the loss models/mr-t1's stage 1 was trained with).
# SEED=N sets both stages' seed (default 8, the seed of every shipped bundle).
# WIDTH=N sets the segmenter's base width in both stages (default 8: widths 8-16-32-64).
# CT_SUBJECTS=N: the first N labelled CT subjects of $CT in both stages (default 3).
# Run it under `nice` on a shared machine; one thread (the default) is the fastest there.
set -e
m=${1:?usage: train.sh ct|mr-t1|mr-t2|cbct|pet}
here=$(dirname "$0")
T="/usr/bin/python3 $here/accseg.py"
CT=${CT:-/work/train-data/ct}
TARGET_ROOT=${TARGET_ROOT:-/work/train-data/target}
RUNS=${RUNS:-/work/train-data/runs}
MODELS=${MODELS:-$here/../../models}
S1=${S1_ITERS:-600}
FT=${FT_ITERS:-3000}
GRID="--spacing ${SPACING:-4} --patch ${PATCH:-64} --seed ${SEED:-8} --width ${WIDTH:-8} --ct-subjects ${CT_SUBJECTS:-3}"
if [ "$m" = ct ]; then
    $T baseline --ct "$CT" --out "$RUNS/baseline"
    $T finetune --ct "$CT" --run "$RUNS/baseline" --iters 1500 --out "$RUNS/baseline-ft" \
        --export "$MODELS/ct"
else
    if [ -z "$REUSE_STAGE1" ] || [ ! -f "$RUNS/$m/G.pt" ]; then
        # shellcheck disable=SC2086
        $T adapt --ct "$CT" --target "$m" --target-root "$TARGET_ROOT" --iters "$S1" --aug 0.5 \
            $GRID ${S1_ARGS:-} --out "$RUNS/$m"
    fi
    if [ -n "$PSEUDO" ]; then
        # GIN on the real pseudo-labelled slices: stage 2's (--aug) unless PSEUDO_AUG says
        # otherwise; none for PET (tools/train/README.md, the PET bullet)
        pa=${PSEUDO_AUG:-}
        [ -z "$pa" ] && [ "$m" = pet ] && pa=0
        # shellcheck disable=SC2086
        $T finetune --ct "$CT" --run "$RUNS/$m" --iters "$FT" --aug 0.8 $GRID \
            --pseudo "$PSEUDO" --target-root "${PSEUDO_ROOTS:-$TARGET_ROOT}" \
            --pseudo-band "${PSEUDO_BAND:-1}" --pseudo-weight "${PSEUDO_WEIGHT:-1}" \
            ${pa:+--pseudo-aug "$pa"} \
            --out "$RUNS/$m-pseudo-ft" --export "$MODELS/$m"
    else
        # shellcheck disable=SC2086
        $T finetune --ct "$CT" --run "$RUNS/$m" --iters "$FT" --aug 0.8 $GRID --out "$RUNS/$m-ft" \
            --export "$MODELS/$m"
    fi
fi
