#!/usr/bin/env bash
# The run that produces the shipped models/ (2 CPU cores, about 80 minutes of training; reports/ gives the timings).
# Every model reads MRI only (the modality audit's CT slices are left out), each slice cropped to the head, and
# trains on the three collections: Br35H's untyped tumors teach the detector and Alzheimer's vs tumor only.
#
# FOLD=K (0-6) trains the same recipe with grouped fold K held out into folds/foldK, each model choosing its epoch
# on that fold, keeps those models' logits on the scans they held out in reports/fold_logits/canonical/foldK.npz (to
# commit: about 80 KB, where the models are 14 MB each; KEPT=path puts it elsewhere, e.g. from a copy of the
# checkout) and skips the fitting; TASKS="a b" trains only those tasks (a fold is kept once all four are in
# folds/foldK, and the shipped models are fitted once all four are trained on every scan, so either can be trained
# over several sessions). Without FOLD, the shipped models train on every scan
# of train/ (--validation none: no fold to choose an epoch on, the last is kept) and are fitted, benchmarked and
# evaluated with every kept fold there is, so folds add up across machines:
#   FOLD=3 train/ship.sh
# Kept logits hold only for shipped models of the same recipe: after changing the recipe, train the folds again.
set -euo pipefail
cd "$(dirname "$0")/.."
# the fitting steps run this checkout's mri-cascade command, as training runs its train/: not an installed copy,
# which may be another checkout's
MRI_CASCADE=(python -m mri_cascade.cli)
FOLD=${FOLD:-}
OUT=${OUT:-${FOLD:+folds/fold$FOLD}}
OUT=${OUT:-models}
ALL_TASKS=(disease-detector alzheimer-vs-tumor alzheimer-severity tumor-type)
TASKS=${TASKS:-${ALL_TASKS[*]}}
COMMON=(--output_dir "$OUT" --model efficientnet-lite0
        --data ../shared/data/alzheimer ../shared/data/brain_tumor ../shared/data/br35h --crop_to_head
        --per_device_train_batch_size 32 --per_device_eval_batch_size 64
        --learning_rate 6e-4 --weight_decay 0.05 --lr_scheduler_type cosine --warmup_steps 30
        --logging_strategy epoch --report_to none --use_cpu --seed 42)
if [ -n "$FOLD" ]; then
  COMMON+=(--validation_fold "$FOLD" --eval_strategy epoch)
  BEST_EPOCH=(--save_strategy epoch --save_total_limit 1 --load_best_model_at_end --metric_for_best_model balanced_accuracy)
  TRAINED_AS='"validation": "fold"' NEXT="keeps the fold"
else
  COMMON+=(--validation none)
  BEST_EPOCH=(--save_strategy no)
  TRAINED_AS='"validation": "none"' NEXT="fits the models"  # models/ holds the held-out kind until then
fi
train() {  # train TASK ARGS...: one run of run_train, when TASK is asked for
  case " $TASKS " in *" $1 "*) python -m train.run_train "${COMMON[@]}" --task "$@" ;; esac
}
# grey-level curves spanning T1/T2/FLAIR looks, wide framing, and what tells one source's scans from another's
train disease-detector "${BEST_EPOCH[@]}" --augmentation multi-sequence --image_size 160 --num_train_epochs 6
train alzheimer-vs-tumor "${BEST_EPOCH[@]}" --augmentation multi-sequence --image_size 128 --num_train_epochs 2
# severity: timm's regularisers (mixup/cutmix and an EMA of the weights), compared over four folds and two seeds
train alzheimer-severity "${BEST_EPOCH[@]}" --image_size 176 --num_train_epochs 10 --mixup_alpha 0.2 \
  --cutmix_alpha 1.0 --ema_decay 0.998
# tumor type: DINOv2 ViT-S/14 fully fine-tuned at 112 px, the last of 10 epochs (fold 0's few other-source tumors
# cannot choose an epoch); on other-source tumors 90.9 % over two runs against Lite0's 78.9 %
train tumor-type --save_strategy no --model dinov2-small --learning_rate 5e-5 --augmentation multi-sequence \
  --image_size 112 --num_train_epochs 10
# a fold or the refit may be trained over several sessions (TASKS): keep or fit it once all four models are trained
# the way this run trains them, never a mix
for task in "${ALL_TASKS[@]}"; do
  if ! grep -q "$TRAINED_AS" "$OUT/$task/training_args.json" 2> /dev/null; then
    echo "$OUT/$task is not trained yet; TASKS=$task ${FOLD:+FOLD=$FOLD }train/ship.sh trains it and $NEXT"
    exit 0
  fi
done
if [ -n "$FOLD" ]; then
  "${MRI_CASCADE[@]}" keep-fold-logits ../shared/data --fold-models "$OUT" \
    --out "${KEPT:-reports/fold_logits/canonical/fold$FOLD.npz}"
  exit 0
fi
shopt -s nullglob
FOLD_MODELS=(reports/fold_logits/canonical/fold*.npz)
# temperatures and the operating points need all four models; the refusal check needs their final weights
"${MRI_CASCADE[@]}" calibrate ../shared/data --models "$OUT" --out reports --test-time-flips disease-detector \
  --fold-models "${FOLD_MODELS[@]}"
"${MRI_CASCADE[@]}" fit-familiarity ../shared/data --models "$OUT" --out reports
"${MRI_CASCADE[@]}" benchmark ../shared/data --models "$OUT" --out reports --update-model-cards \
  --fold-models "${FOLD_MODELS[@]}"
"${MRI_CASCADE[@]}" evaluate ../shared/data --models "$OUT" --out reports --update-model-cards \
  --fold-models "${FOLD_MODELS[@]}"
"${MRI_CASCADE[@]}" evaluate ../shared/data --models "$OUT" --out reports --operating-point screening \
  --fold-models "${FOLD_MODELS[@]}"
