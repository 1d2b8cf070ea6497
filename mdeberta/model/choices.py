"""The model's named choices, in a module without torch or transformers: the CLI lists them in
every stage's settings, including stages that never load a model."""

# layers (discriminator), generator layers, hidden size, attention heads, FFN size
SIZES = {
    "tiny": (2, 1, 32, 2, 64),  # CPU tests only
    "xsmall": (12, 6, 384, 6, 1536),
    "small": (6, 3, 768, 12, 3072),
    "base": (12, 6, 768, 12, 3072),
    "large": (24, 12, 1024, 16, 4096),
}

# mdeberta-v3-base: 250,101 SentencePiece pieces + [MASK], padded to a round number.
DEFAULT_VOCAB_SIZE = 251000

BACKENDS = ("eager", "sdpa", "compact", "fused", "flex")  # attention; "auto" picks one per call
# The stages train with attention dropout, which flex (FlexAttention) does not have.
TRAINING_BACKENDS = tuple(name for name in BACKENDS if name != "flex")
SHARING = ("es", "nes", "gdes")  # embedding sharing between generator and discriminator
