"""The transformers files of the tokenizer, written from spm.model with the `tokenizers` library.

transformers' own SentencePiece converter drops byte fallback (unknown characters become
[UNK]) and uses a normaliser of its own, so its ids differ from SentencePiece's. Here every
part is taken from the model itself: its normalisation, its pieces and scores, byte fallback,
and DeBERTa's ``[CLS] A [SEP] B [SEP]`` input format.
"""

from __future__ import annotations

import json
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import Unigram

from ..storage import write_text_atomic
from .normalization import hf_normalizer

PAD, CLS, SEP, UNK, MASK = "[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"
SPECIAL_IDS = {PAD: 0, CLS: 1, SEP: 2, UNK: 3}  # inside spm.model; [MASK] follows the pieces
NORMAL, USER_DEFINED = 1, 4  # SentencePiece piece types that may match text
SPACE = "\u2581"
# Pieces SentencePiece never matches in text (control and byte pieces) get a score far below any
# real piece, so the `tokenizers` lattice does not choose them for text that spells them out
# ("<0x41>"), while staying small enough that path sums keep their precision.
UNMATCHABLE_MARGIN = 1000.0


def load_model_proto(path: Path):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def build_tokenizer(proto) -> Tokenizer:
    floor = min(p.score for p in proto.pieces if p.type == NORMAL) - UNMATCHABLE_MARGIN
    vocab = [(p.piece, p.score if p.type in (NORMAL, USER_DEFINED) else floor) for p in proto.pieces]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=True))
    tokenizer.normalizer = hf_normalizer(proto.normalizer_spec)
    # split=True runs the lattice word by word; no piece spans a space inside it (the model is
    # trained with split_by_whitespace), so this equals SentencePiece's whole-line lattice.
    prepend = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=prepend, split=True)
    tokenizer.decoder = decoders.Sequence([
        decoders.ByteFallback(),  # runs of <0xNN> pieces back to text (U+FFFD for invalid UTF-8, as SentencePiece)
        decoders.Metaspace(replacement=SPACE, prepend_scheme=prepend, split=True),
    ])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token in (PAD, CLS, SEP, UNK, MASK)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, SPECIAL_IDS[CLS]), (SEP, SPECIAL_IDS[SEP])])
    return tokenizer


def check_special_ids(proto, model_path: Path) -> None:
    for token, expected in SPECIAL_IDS.items():
        if proto.pieces[expected].piece != token:
            raise ValueError(f"{model_path}: piece {expected} is {proto.pieces[expected].piece!r}, not {token}")


def tokenizer_config(model_max_length: int) -> dict:
    """Loaded by the generic tokenizers-backed class, which takes tokenizer.json as it is; the
    DeBERTa-v2 class would rebuild the pipeline from the vocabulary without byte fallback."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "bos_token": CLS, "eos_token": SEP, "unk_token": UNK, "sep_token": SEP,
        "pad_token": PAD, "cls_token": CLS, "mask_token": MASK,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }


def special_tokens_map() -> dict:
    return {"bos_token": CLS, "eos_token": SEP, "unk_token": UNK, "sep_token": SEP,
            "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}


def write_hf_files(model_path: Path, out: Path, model_max_length: int) -> int:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json next to spm.model;
    returns the [MASK] id (the piece count)."""
    proto = load_model_proto(model_path)
    check_special_ids(proto, model_path)
    tokenizer = build_tokenizer(proto)
    mask_id = tokenizer.token_to_id(MASK)
    assert mask_id == len(proto.pieces), (mask_id, len(proto.pieces))
    write_text_atomic(out / "tokenizer.json", tokenizer.to_str(pretty=True))
    for name, data in (("tokenizer_config.json", tokenizer_config(model_max_length)),
                       ("special_tokens_map.json", special_tokens_map())):
        write_text_atomic(out / name, json.dumps(data, indent=2) + "\n")
    return mask_id
