#!/usr/bin/env bash
# The exact runs that produced the shipped models/ (2 CPU cores; see reports/ for their timings).
set -euo pipefail
cd "$(dirname "$0")/.."
COMMON=(--model efficientnet-lite0 --data ../shared/data/alzheimer ../shared/data/brain_tumor
        --per_device_train_batch_size 32 --per_device_eval_batch_size 64
        --learning_rate 6e-4 --weight_decay 0.05 --lr_scheduler_type cosine --warmup_steps 30
        --logging_strategy epoch --report_to none --use_cpu --seed 42)
BEST_EPOCH=(--eval_strategy epoch --save_strategy epoch --save_total_limit 1 --load_best_model_at_end
            --metric_for_best_model balanced_accuracy)
# the detector: augmentation against the tumor collection's source shift (reports/accuracy_experiments.md, row 10)
DETECTOR=(--task disease-detector --augmentation robust --image_size 160 --num_train_epochs 6)
SEVERITY=(--task alzheimer-severity --image_size 176 --num_train_epochs 10)
# tumor type: augmentation against the source shift, and the last epoch, as compared on other-source scans (row 9)
TUMOR_TYPE=(--task tumor-type --augmentation robust --image_size 176 --num_train_epochs 10)
# stage 2 holds out fold 0 and keeps its best epoch: it names every scan's family right on every split
python train/run_train.py --output_dir models "${COMMON[@]}" "${BEST_EPOCH[@]}" \
  --task alzheimer-vs-tumor --image_size 128 --num_train_epochs 2 "$@"
# the other recipes on held-out grouped folds (never shipped): their held-out predictions chose the schedules
# below (row 17) and fit the temperatures and operating points; fold 0 holds ~28 Alzheimer clusters, 0-3 ~113
for fold in 0 1 2 3; do
  FOLD=(--output_dir "folds/$fold" --validation_fold "$fold" "${COMMON[@]}" "${BEST_EPOCH[@]}")
  python train/run_train.py "${FOLD[@]}" "${DETECTOR[@]}" "$@"
  python train/run_train.py "${FOLD[@]}" "${SEVERITY[@]}" "$@"
done
python train/run_train.py --output_dir folds/0 "${COMMON[@]}" "${TUMOR_TYPE[@]}" --eval_strategy epoch \
  --save_strategy no "$@"
# the shipped detector, severity and tumor-type models: each recipe refitted on every scan of train/, for its
# whole schedule (row 17); nothing is left to validate them, so the fold models above calibrate them
REFIT=(--output_dir models --validation none --save_strategy no "${COMMON[@]}")
python train/run_train.py "${REFIT[@]}" "${DETECTOR[@]}" "$@"
python train/run_train.py "${REFIT[@]}" "${SEVERITY[@]}" "$@"
python train/run_train.py "${REFIT[@]}" "${TUMOR_TYPE[@]}" "$@"
# temperatures and both operating points need all four models; the refusal check needs their final weights
mri-cascade calibrate ../shared/data --models models --out reports --test-time-flips disease-detector \
  --fold-models folds/0 folds/1 folds/2 folds/3
mri-cascade fit-familiarity ../shared/data --models models --out reports
mri-cascade evaluate ../shared/data --models models --out reports --update-model-cards
mri-cascade evaluate ../shared/data --models models --out reports --operating-point screening
