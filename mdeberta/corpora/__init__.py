"""Stage 1: raw CC100-style text -> clean, deduplicated, language-identified per-language shards."""
