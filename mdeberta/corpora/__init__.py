"""Stage 1: raw CC100-style text -> clean, deduplicated, language-identified per-language shards.

What later stages read of it: ``contract`` (a finished corpus folder, its shards per language and
their shares) and the XNLI languages below."""

from .languages import XNLI_LANGUAGES

__all__ = ["XNLI_LANGUAGES"]
