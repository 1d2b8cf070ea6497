import pytest
import torch

from mdeberta.model import size_config

VOCAB = 120


def tiny_config(**overrides):
    """Dropout off, positions up to 640 so that length 600 exceeds the 256 position buckets."""
    values = dict(vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  max_position_embeddings=640)
    values.update(overrides)
    return size_config("tiny", **values)


def padded_batch(length: int, seed: int = 0):
    """Three rows: full, half padding, two pads at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, max(1, length // 2):] = 0
    mask[2, max(1, length - 2):] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


@pytest.fixture
def config():
    torch.manual_seed(0)
    return tiny_config()
