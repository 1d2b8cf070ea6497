"""Run by test_cpu_isa.py in a fresh process, under the ATEN_CPU_CAPABILITY it is given: the flex
backend against transformers on padded batches, and the fused kernel's probabilities with dropout.

    python -m tests.model.isa_probe OUT.pt
"""

import sys

import torch
import transformers

from mdeberta import model as ours
from mdeberta.model import cpu_isa, fused_kernel
from mdeberta.model.attention.fused import kernel_layout, kernel_probabilities

from .conftest import padded_batch, tiny_config

FLEX_LENGTHS = (40, 600)  # 8 mod 16: the lengths inductor's AVX2 FlexAttention got wrong at head size 16


def flex_differences() -> dict[int, float]:
    """Largest |flex - transformers| of the classification logits, per length."""
    torch.manual_seed(0)
    config = tiny_config()
    reference = transformers.DebertaV2ForSequenceClassification(config).eval()
    mine = ours.build(config, head="classification", attention="flex").eval()
    mine.load_state_dict(reference.state_dict(), strict=True)
    differences = {}
    with torch.no_grad():
        for length in FLEX_LENGTHS:
            ids, mask = padded_batch(length)
            got, expected = (model(ids, attention_mask=mask).logits for model in (mine, reference))
            differences[length] = (got - expected).abs().max().item()
    return differences


def fused_dropout_probabilities() -> torch.Tensor | None:
    """The kernel's signed probabilities (the dropout mask in their signs) for fixed inputs and seed."""
    kernel = fused_kernel.load()
    if kernel is None:
        return None
    generator = torch.Generator().manual_seed(7)
    batch, heads, length, span = 2, 3, 37, 11
    q, k = (torch.randn(batch, heads, length, 16, generator=generator) for _ in range(2))
    c2p, p2c = torch.randn(batch, heads, length, span, generator=generator), \
        torch.randn(batch, heads, span, length, generator=generator)
    index = torch.randint(0, span, (length, length), generator=generator)
    mask = torch.rand(batch, 1, length, length, generator=generator) > 0.2
    layout = kernel_layout(index, mask, batch, length, length)
    torch.manual_seed(5)
    return kernel_probabilities(kernel, q, k, c2p, p2c, *layout, 4.0, 0.25)[0]


if __name__ == "__main__":
    torch.save({"capability": cpu_isa.capability(), "flex": flex_differences(),
                "fused": fused_dropout_probabilities()}, sys.argv[1])
