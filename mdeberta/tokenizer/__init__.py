"""Stage 2: a language-balanced SentencePiece unigram vocabulary, saved as a transformers tokenizer."""
