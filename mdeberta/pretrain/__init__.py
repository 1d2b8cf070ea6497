"""Stage 3: DeBERTaV3 pretraining (replaced token detection with embedding sharing).

    tokens.py        corpus shards -> per-language uint32 token streams + held-out slice (once)
    data.py          packed [CLS] ... [SEP] sequences, languages drawn by p_i^alpha, resumable position
    train.py         the loop: accumulation, clipping, AdamW, DDP, validation, signals, exact resume
    checkpoint.py    step-N folders: weights, optimizer, scheduler, RNG, data position, settings
    metrics.py       RTD AUC, FLOPs/MFU, metrics.jsonl (+ TensorBoard, W&B: ../trackers.py)
    plot.py          curves.png and several runs' curves in one picture, from metrics.jsonl
    export.py        checkpoint -> transformers discriminator/ and generator/
    analyze.py       Table 1: average cosine similarity of E_G, E_D, E_delta
    ablation.py      ES, NES and GDES runs compared: ablation.md|csv|png
    stage.py         `mdeberta pretrain run`: tokenize, then train; the pretrain and export stages
"""
