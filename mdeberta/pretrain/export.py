"""``mdeberta pretrain export``: a checkpoint -> two transformers folders with the tokenizer.

    <out>/discriminator/   DebertaV2Model, word embedding E_G + E_delta under GDES (AutoModel)
    <out>/generator/       DebertaV2ForMaskedLM (AutoModelForMaskedLM), without the Enhanced Mask Decoder
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..locking import output_lock
from ..manifest import write_json_atomic
from ..storage import tensor_bytes, writing
from .checkpoint import TOKENIZER, TOKENIZER_FILES, checkpoint_fingerprint, load_model, require_intact

EXPORTED = "export.json"  # what was exported, written last


def export_checkpoint(checkpoint: Path, out: Path) -> dict[str, Path]:
    """Each folder is written under a temporary name and renamed when complete; nothing else in
    ``out`` is touched. ``export.json`` records the checkpoint's fingerprint, which tells a rerun
    whether the checkpoint was replaced since (its path alone does not)."""
    checkpoint, out = require_intact(Path(checkpoint)), Path(out)
    with output_lock(out):
        return _export(checkpoint, out)


def _export(checkpoint: Path, out: Path) -> dict[str, Path]:
    model = load_model(checkpoint)
    folders = {}
    for name, export in (("discriminator", model.export_discriminator), ("generator", model.export_generator)):
        tmp = out / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with writing(out / name, tensor_bytes(model.state_dict()), partial=tmp, approximate=True):
            export(tmp)
            for file in TOKENIZER_FILES:
                if (checkpoint / TOKENIZER / file).is_file():
                    shutil.copy2(checkpoint / TOKENIZER / file, tmp / file)
        shutil.rmtree(out / name, ignore_errors=True)
        folders[name] = tmp.rename(out / name)
    write_json_atomic(out / EXPORTED, {"checkpoint": str(checkpoint.resolve()),
                                        "fingerprint": checkpoint_fingerprint(checkpoint),
                                        "sharing": model.sharing, "mask_token_id": model.mask_token_id,
                                        "real_vocab_size": model.real_vocab_size})
    return folders


def exported_fingerprint(out: Path) -> dict | None:
    """The fingerprint of the checkpoint exported into ``out`` (None: no finished export there)."""
    try:
        return json.loads((out / EXPORTED).read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None
