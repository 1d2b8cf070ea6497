"""mdeberta: pretrain a multilingual DeBERTaV3 from raw web text and measure it on XNLI."""

__version__ = "0.1.0"
