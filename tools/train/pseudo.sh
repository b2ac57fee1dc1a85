#!/bin/sh
# tools/train/pseudo.sh MODALITY OUT ROOT [ROOT...] — pseudo-labels for stage 2 (accseg.py
# finetune --pseudo OUT, train.sh PSEUDO=OUT): the atlas method (`segnode segment --method atlas`:
# registration of the CT atlases, MIND-SSC, label fusion) on every unlabelled target series
# ROOT/subject-NNN/MODALITY, written as OUT/subject-NNN/MODALITY.dcm (a SEG on the series' grid),
# plus OUT/source.json (atlases, fusion, binary) for the bundle's data manifest.
# The atlases must be labelled CT of the training subjects only (the default library below:
# `segnode atlas import --phantom` of CT subjects 1-3); no target label is read.
#   SEGNODE  segnode binary (default build/tools/segnode/segnode)
#   CONFIG   segnode config whose storage holds the atlas library (default
#            /work/train-data/atlas/segnode.conf)
#   ATLASES  comma list of atlas names (default subject-001,subject-002,subject-003)
#   FUSION   majority | local | jlf (default: the node's default, local since commit 772df55;
#            the MR and CBCT pseudo-labels of tools/train/README.md were made with jlf)
#   SELECT_K K  register every atlas affine only and only the K most similar after affine in
#            full (`segment --select-k K|all|auto`, a route's select_k; default: the node's,
#            auto, which is K = the number of subjects for a two-phase library; the labels
#            made before auto became the default were made with every atlas in full: all).
#            With N subjects in two phases, K = N keeps one phase per subject
#   METHOD   atlas | both (default atlas). both: `segment --method both --model $MODEL`, the
#            bundle's probabilities fused with the atlases as a both route sends it (self-
#            training: MODEL may be a bundle trained on these same targets' earlier labels)
#   MODEL    the bundle for METHOD=both
# Existing outputs are kept (rerun to add subjects). Minutes per full-size series: run under
# `nice` on a shared machine.
set -e
m=${1:?usage: pseudo.sh MODALITY OUT ROOT [ROOT...]}
out=${2:?usage: pseudo.sh MODALITY OUT ROOT [ROOT...]}
shift 2
[ $# -ge 1 ] || { echo "usage: pseudo.sh MODALITY OUT ROOT [ROOT...]" >&2; exit 2; }
here=$(dirname "$0")
SEGNODE=${SEGNODE:-$here/../../build/tools/segnode/segnode}
CONFIG=${CONFIG:-/work/train-data/atlas/segnode.conf}
ATLASES=${ATLASES:-subject-001,subject-002,subject-003}
fusion=""
[ -n "$FUSION" ] && fusion="--fusion $FUSION"
[ -n "$SELECT_K" ] && fusion="$fusion --select-k $SELECT_K"
method=${METHOD:-atlas}
case "$method" in
    atlas) ;;
    both) [ -n "$MODEL" ] || { echo "pseudo.sh: METHOD=both needs MODEL=BUNDLE" >&2; exit 2; }
          [ -z "$FUSION" ] || { echo "pseudo.sh: METHOD=both fuses as the node does; no FUSION" >&2; exit 2; }
          [ -f "$MODEL/model.json" ] || { echo "pseudo.sh: MODEL $MODEL: no model.json" >&2; exit 2; }
          MODEL=$(realpath "$MODEL")   # source.json names the bundle wherever it was run from
          fusion="$fusion --model $MODEL" ;;
    *) echo "pseudo.sh: METHOD must be atlas or both" >&2; exit 2 ;;
esac
mkdir -p "$out"
# the atlases as the library holds them (name, modality, series UID, grid): which CT they are
"$SEGNODE" -c "$CONFIG" atlas list --json | /usr/bin/python3 -c '
import json, sys
names = sys.argv[1].split(",")
lib = [{k: a[k] for k in ("name", "modality", "series_uid", "size")}
       for a in json.load(sys.stdin) if a["name"] in names]
if len(lib) != len(names):
    sys.exit("atlases %s: not all in the library" % sys.argv[1])
json.dump({"method": sys.argv[7], "model": sys.argv[8] or None, "atlases": lib, "fusion": sys.argv[2], "config": sys.argv[3],
           "segnode": sys.argv[4], "select_k": (int(sys.argv[6]) if sys.argv[6].isdigit() else sys.argv[6]) if sys.argv[6] else "auto",
           "note": "atlases are labelled CT of training subjects only; no target label is read"},
          open(sys.argv[5], "w"), indent=1)
' "$ATLASES" "${FUSION:-default}" "$CONFIG" "$("$SEGNODE" --version 2>&1 | head -n 1)" \
    "$out/source.json" "${SELECT_K:-}" "$method" "${MODEL:-}"
for root in "$@"; do
    for d in "$root"/subject-*/"$m"; do
        [ -d "$d" ] || continue
        s=$(basename "$(dirname "$d")")
        [ -f "$out/$s/$m.dcm" ] && continue
        mkdir -p "$out/$s"
        t0=$(date +%s)
        # shellcheck disable=SC2086
        "$SEGNODE" -c "$CONFIG" segment --method "$method" --atlases "$ATLASES" $fusion \
            --out "$out/$s/partial-$m.dcm" "$d"
        mv "$out/$s/partial-$m.dcm" "$out/$s/$m.dcm"
        echo "$s/$m: $(( $(date +%s) - t0 )) s"
    done
done
