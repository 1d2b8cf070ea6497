"""Stage 4: XNLI fine-tuning (zero-shot and translate-train-all) and the per-language report.

    data.py      readers: facebook/xnli (hub, cache or saved), XNLI-1.0 and XNLI-MT-1.0 TSVs
    batching.py  tokenised pairs, length-grouped batches, DDP shards
    train.py     the fine-tuning loop, evaluation, best-checkpoint selection, resume
    stage.py     `mdeberta xnli run`: everything above per seed, then the report; the stage: a run per setting, one report
    report.py    results.csv|json|md and xnli.png from saved predictions
    intervals.py 95% intervals: Wilson's for a run's accuracy, Student's t for a mean over seeds
"""
