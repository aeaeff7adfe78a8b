#!/usr/bin/env bash
# The exact run that produced the shipped models/ (2 CPU cores; see reports/ for its timings).
set -euo pipefail
cd "$(dirname "$0")/.."
COMMON=(--model efficientnet-lite0 --data ../shared/data/alzheimer ../shared/data/brain_tumor
        --per_device_train_batch_size 32 --per_device_eval_batch_size 64
        --learning_rate 6e-4 --weight_decay 0.05 --lr_scheduler_type cosine --warmup_steps 30
        --eval_strategy epoch --logging_strategy epoch --report_to none --use_cpu --seed 42)
BEST_EPOCH=(--save_strategy epoch --save_total_limit 1 --load_best_model_at_end --metric_for_best_model balanced_accuracy)
# the detector: augmentation against the tumor collection's source shift (reports/accuracy_experiments.md, row 10)
DETECTOR=(--task disease-detector --augmentation robust --image_size 160 --num_train_epochs 6)
# severity: timm's regularisers, compared over four folds and two seeds (reports/accuracy_experiments.md, row 27)
SEVERITY=(--task alzheimer-severity --image_size 176 --num_train_epochs 10
          --mixup_alpha 0.2 --cutmix_alpha 1.0 --ema_decay 0.998)
python train/run_train.py --output_dir models "${COMMON[@]}" "${BEST_EPOCH[@]}" \
  --task alzheimer-vs-tumor --image_size 128 --num_train_epochs 2 "$@"
python train/run_train.py --output_dir models "${COMMON[@]}" "${BEST_EPOCH[@]}" "${SEVERITY[@]}" "$@"
python train/run_train.py --output_dir models "${COMMON[@]}" "${BEST_EPOCH[@]}" "${DETECTOR[@]}" "$@"
# tumor type: augmentation against the tumor collection's source shift, 224 px, and the last epoch, as compared on
# other-source scans over two runs each (reports/accuracy_experiments.md, rows 9 and 25); fold 0's validation
# cannot choose its epoch
python train/run_train.py --output_dir models "${COMMON[@]}" \
  --task tumor-type --augmentation robust --image_size 224 --num_train_epochs 10 --save_strategy no "$@"
# the same recipes on validation folds 1-3 (never shipped): their held-out predictions add subjects to those
# the temperatures and operating points are fitted on (fold 0 holds ~28 Alzheimer clusters, ~13 demented)
for fold in 1 2 3; do
  FOLD=(--output_dir "folds/$fold" --validation_fold "$fold" "${COMMON[@]}" "${BEST_EPOCH[@]}")
  python train/run_train.py "${FOLD[@]}" "${DETECTOR[@]}" "$@"
  python train/run_train.py "${FOLD[@]}" "${SEVERITY[@]}" "$@"
done
# temperatures and both operating points need all four models; the refusal check needs their final weights
mri-cascade calibrate ../shared/data --models models --out reports --test-time-flips disease-detector \
  --fold-models folds/1 folds/2 folds/3
mri-cascade fit-familiarity ../shared/data --models models --out reports
mri-cascade evaluate ../shared/data --models models --out reports
mri-cascade evaluate ../shared/data --models models --out reports --operating-point screening
# again with the fold models answering the test scans of the subjects they held out: more unseen subjects
mri-cascade evaluate ../shared/data --models models --out reports/unseen_subjects --update-model-cards \
  --fold-models folds/1 folds/2 folds/3
mri-cascade evaluate ../shared/data --models models --out reports/unseen_subjects --operating-point screening \
  --fold-models folds/1 folds/2 folds/3
