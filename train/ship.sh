#!/usr/bin/env bash
# The exact run that produces the shipped models/ (2 CPU cores, about 75 minutes; reports/ gives the timings).
# Every model reads MRI only (the modality audit's CT slices are left out), each slice cropped to the head, and
# trains on the three collections: Br35H's untyped tumors teach the detector and Alzheimer's vs tumor only.
#
# FOLD=K trains the same recipe with grouped fold K held out into folds/foldK and skips the fitting, which belongs
# to the shipped models; TASKS="a b" trains only those tasks. The shipped models' fitting and benchmark use every
# folds/fold* there is: run these first (about 47 minutes a fold) for more held-out Alzheimer subjects:
#   for k in 1 2; do FOLD=$k TASKS="disease-detector alzheimer-vs-tumor alzheimer-severity" train/ship.sh; done
set -euo pipefail
cd "$(dirname "$0")/.."
FOLD=${FOLD:-0}
if [ "$FOLD" = 0 ]; then OUT=${OUT:-models}; else OUT=${OUT:-folds/fold$FOLD}; fi
TASKS=${TASKS:-disease-detector alzheimer-vs-tumor alzheimer-severity tumor-type}
COMMON=(--output_dir "$OUT" --model efficientnet-lite0 --validation_fold "$FOLD"
        --data ../shared/data/alzheimer ../shared/data/brain_tumor ../shared/data/br35h --crop_to_head
        --per_device_train_batch_size 32 --per_device_eval_batch_size 64
        --learning_rate 6e-4 --weight_decay 0.05 --lr_scheduler_type cosine --warmup_steps 30
        --eval_strategy epoch --logging_strategy epoch --report_to none --use_cpu --seed 42)
BEST_EPOCH=(--save_strategy epoch --save_total_limit 1 --load_best_model_at_end --metric_for_best_model balanced_accuracy)
train() {  # train TASK ARGS...: one run of run_train, when TASK is asked for
  case " $TASKS " in *" $1 "*) python -m train.run_train "${COMMON[@]}" --task "$@" ;; esac
}
# grey-level curves spanning T1/T2/FLAIR looks, wide framing, and what tells one source's scans from another's
train disease-detector "${BEST_EPOCH[@]}" --augmentation multi-sequence --image_size 160 --num_train_epochs 6
train alzheimer-vs-tumor "${BEST_EPOCH[@]}" --augmentation multi-sequence --image_size 128 --num_train_epochs 2
# severity: timm's regularisers (mixup/cutmix and an EMA of the weights), compared over four folds and two seeds
train alzheimer-severity "${BEST_EPOCH[@]}" --image_size 176 --num_train_epochs 10 --mixup_alpha 0.2 \
  --cutmix_alpha 1.0 --ema_decay 0.998
# tumor type: 224 px and the last of 10 epochs (fold 0's few other-source tumors cannot choose an epoch)
train tumor-type --augmentation multi-sequence --image_size 224 --num_train_epochs 10 --save_strategy no
[ "$FOLD" = 0 ] || exit 0
shopt -s nullglob
FOLD_MODELS=(folds/fold*/)
# temperatures and the operating points need all four models; the refusal check needs their final weights
mri-cascade calibrate ../shared/data --models "$OUT" --out reports --test-time-flips disease-detector \
  --fold-models "${FOLD_MODELS[@]}"
mri-cascade fit-familiarity ../shared/data --models "$OUT" --out reports
mri-cascade benchmark ../shared/data --models "$OUT" --out reports --update-model-cards --fold-models "${FOLD_MODELS[@]}"
mri-cascade evaluate ../shared/data --models "$OUT" --out reports --update-model-cards
mri-cascade evaluate ../shared/data --models "$OUT" --out reports --operating-point screening
