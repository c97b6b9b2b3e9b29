#!/usr/bin/env bash
# The real-catalog report in README "Fine-tuning on a real catalog": fine-tune on the 9,583
# product photos in ../shared/data/fashion-224 and score the result against raw pixels, the
# shipped model, WiSE-FT, a from-scratch model and an ablation, all on the same 1,917 newest
# products. Nothing here is committed: runs go to benchmarks/.work/fashion (git-ignored).
#
#   bash benchmarks/tune_fashion.sh               # + two 8-epoch comparisons (not re-timed)
#   MAIN_ONLY=1 bash benchmarks/tune_fashion.sh   # the shop owner's command: 77 min on 2 plain
#                                                 # CPU cores (fine-tuning 51.6 + evaluation 6.6;
#                                                 # the upscaler 17.5; index 1)
#
# A training whose model folder is already written is not run again (tune checks that the
# folder records the same catalog and configuration), so an interrupted run picks up there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
shared=${SHARED:-../shared}
catalog=$shared/data/fashion-224/metadata.csv
weights=$shared/weights/realesrgan/realesr-general-x4v3.pth
out=${OUT:-benchmarks/.work/fashion}
threads=${THREADS:-2}
if [ ! -f "$catalog" ]; then
    echo "needs $catalog (../shared is not checked out)" >&2
    exit 2
fi
map=(--map title=productDisplayName --map category=subCategory --map colour=baseColour)
# The test products are the newest 20% (highest ids: --split-by id, the default), as a shop
# meets products added after its model was trained.
common=(--shopper-max-down 12 --test-fraction 0.2 --val-fraction 0.1 --threads "$threads" --no-progress)
compare=()
upscalers=never,bicubic,psnr,auto  # and the upscaler tune trains for the new model
if [ -z "${MAIN_ONLY:-}" ]; then
    # Real-ESRGAN's general model too (measured to lower Recall@1 here; ~15 min of evaluation)
    upscalers=never,bicubic,psnr,realesr-general-x4v3,auto
    # the same recipe from random weights, and an ablation with less attribute supervision
    [ -f "$out/scratch/training.json" ] || "$python" -m searchcore finetune --catalog "$catalog" \
        "${map[@]}" "${common[@]}" --base sc-small --out "$out/scratch" --epochs 8 --lr 1e-3 \
        --image-image-weight 2 --attr-weight 1
    [ -f "$out/ablation/training.json" ] || "$python" -m searchcore finetune --catalog "$catalog" \
        "${map[@]}" "${common[@]}" --base default --out "$out/ablation" --epochs 8 --lr 5e-4 \
        --image-image-weight 2 --attr-weight 1
    compare=(--compare "from scratch (sc-small, 8 epochs)=$out/scratch"
             --compare "fine-tuned, attribute weight 1, 8 epochs=$out/ablation")
fi
# The shop owner's one command: split, fine-tune, train an upscaler, index build, evaluation,
# report. Twelve epochs, the first six at 64 px (progressive resizing), the last six with the
# stem and first stage frozen (FreezeOut), keep fine-tuning plus evaluation within an hour on
# two plain CPU cores. WiSE-FT lost on every measure in both real-catalog runs (README), so it
# is not scored here (--wise 0.5 brings it back: evaluation 8.8 min instead of 6.6).
"$python" -m searchcore tune --catalog "$catalog" "${map[@]}" "${common[@]}" \
    --base default --out "$out/main" --epochs 12 --low-res-epochs 6 --freeze-groups 3 --lr 5e-4 \
    --image-image-weight 1 --attr-weight 3 --upscalers "$upscalers" --upscaler-weights "$weights" \
    --text-queries benchmarks/text_queries/fashion.json --baselines pixels:30x40,base --wise "" \
    --similar-attrs masterCategory,category,colour,gender "${compare[@]}"
echo "report: $out/main/report.md (plots beside it); model: $out/main/model; index: $out/main/index"
