"""Speed and memory of one full RTD pretraining step: ours against the same step built from
transformers' DeBERTa-v2 modules.

A step: mask 15% of the tokens (special tokens never), generator forward on the masked input,
MLM loss at the masked positions, one sample per masked position from the generator's softmax,
discriminator forward on the corrupted input, RTD BCE loss over every token,
loss = L_MLM + 50 * L_RTD, backward, AdamW step (betas 0.9/0.98, eps 1e-6, weight decay 0.01 on
matrices only; fused, the same on every side). Embedding sharing: GDES.

Contenders, all built from the same configs with the same seed, in train mode (dropout 0.1):
- ``transformers``: ``DebertaV2ForMaskedLM`` as the generator, called with labels (-100 at unmasked
  positions) so it computes logits at every position, as transformers does; discriminator =
  ``DebertaV2Model`` + the RTD head of the public DeBERTa code; GDES written the plain way (the
  discriminator's word table is the generator's ``weight.detach()`` + a zero-initialised delta).
- ``transformers-masked-head``: the same, but the generator's LM head only sees the masked
  positions' hidden states (gathered before ``cls.predictions``): the difference from the row above
  is what the head alone costs.
- ``ours``: ``mdeberta.model.RTDModel`` as pretraining builds it (attention "auto", masked-only LM
  head, Enhanced Mask Decoder: the generator's last layer run twice more for the masked queries,
  work the transformers-built generator does not do).
- ``ours-no-emd``: ours without the Enhanced Mask Decoder, the exact computation of the
  transformers-built step.
- ``ours-decoupled``: ours with the decoupled update pretraining makes under NES and GDES: the
  generator's backward of L_MLM and its AdamW step, then the discriminator's forward on the
  corrupted batch, backward of 50 L_RTD and its AdamW step (two optimizers, each over its model).

Before timing, the transformers-built steps are loaded with the weights of ``ours-no-emd``
(GDES delta made non-zero) and must give the same losses on the same batch and masking/sampling
seed in eval mode, fp32; the largest difference is reported. Timing and memory follow
benchmarks/_timing.py: warm-up steps, interleaved rounds, medians of wall and CPU time (on a shared
CPU, run with ``--threads 1`` and compare CPU times); memory of a contender's second step in a
fresh process, above what its weights, optimizer state and batch already hold. On CUDA, MFU too.

Usage: python benchmarks/pretrain_speed.py [--size xsmall] [--length 512] [--batch 2] [--rounds 5]
       [--device cpu|cuda] [--dtype fp32|bf16] [--vocab-size 32000] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NamedTuple

import torch
import torch.nn.functional as F
import transformers
from _timing import interleaved_medians, json_from_child, machine, peak_step_bytes, release_freed_memory
from torch import nn

from mdeberta.model import RTDModel, size_config
from mdeberta.model.rtd import choose_masked_positions, sample_replacements
from mdeberta.optim import adamw
from mdeberta.pretrain.metrics import peak_flops, training_flops_per_token

CONTENDERS = ("transformers", "transformers-masked-head", "ours", "ours-no-emd", "ours-decoupled")
SPECIAL_TOKEN_IDS = (0, 1, 2)  # [PAD], [CLS], [SEP]
MASK_RATE, RTD_WEIGHT = 0.15, 50.0


class Losses(NamedTuple):
    loss: torch.Tensor
    mlm_loss: torch.Tensor
    rtd_loss: torch.Tensor


class RTDHead(nn.Module):
    """LayerNorm(h_i + h_CLS) -> Linear -> GELU -> Linear(H, 1), named like our ``mask_predictions``."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden):
        return self.classifier(F.gelu(self.dense(self.LayerNorm(hidden[:, :1] + hidden)))).squeeze(-1)


class DetachedPlusDelta(nn.Module):
    """GDES as a user would write it: E_D = E_G.detach() + delta, looked up in the merged table.
    The generator's embedding is held, not registered, so the optimizer sees it once."""

    def __init__(self, source: nn.Embedding):
        super().__init__()
        self._source = (source,)
        self.delta = nn.Parameter(torch.zeros_like(source.weight))

    def forward(self, ids):
        return F.embedding(ids, self._source[0].weight.detach() + self.delta)


class TransformersDiscriminator(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.deberta = transformers.DebertaV2Model(config)
        self.mask_predictions = RTDHead(config)

    def forward(self, input_ids, attention_mask):
        return self.mask_predictions(self.deberta(input_ids, attention_mask=attention_mask).last_hidden_state)


class TransformersRTD(nn.Module):
    """The RTD step from transformers' modules, masking and sampling shared with ours (specials are
    neither masked nor sampled)."""

    def __init__(self, discriminator_config, generator_config, mask_token_id: int, masked_head: bool):
        super().__init__()
        self.generator = transformers.DebertaV2ForMaskedLM(generator_config)
        self.discriminator = TransformersDiscriminator(discriminator_config)
        embeddings = self.discriminator.deberta.embeddings
        embeddings.word_embeddings = DetachedPlusDelta(self.generator.deberta.embeddings.word_embeddings)
        self.mask_token_id = mask_token_id
        self.masked_head = masked_head
        self.register_buffer("special_token_ids", torch.tensor([*SPECIAL_TOKEN_IDS, mask_token_id]),
                             persistent=False)

    def forward(self, input_ids, attention_mask, generator=None) -> Losses:
        maskable = attention_mask.bool() & ~torch.isin(input_ids, self.special_token_ids)
        masked = choose_masked_positions(maskable, MASK_RATE, generator)
        originals = input_ids[masked]
        masked_input = input_ids.masked_fill(masked, self.mask_token_id)
        if self.masked_head:
            hidden = self.generator.deberta(masked_input, attention_mask=attention_mask).last_hidden_state
            logits = self.generator.cls(hidden[masked])
            mlm_loss = F.cross_entropy(logits.float(), originals)
        else:
            out = self.generator(masked_input, attention_mask=attention_mask,
                                 labels=input_ids.masked_fill(~masked, -100))
            logits, mlm_loss = out.logits[masked], out.loss
        corrupted = input_ids.clone()
        corrupted[masked] = sample_replacements(logits, 1.0, generator, excluded=self.special_token_ids)
        labels = corrupted != input_ids
        real = attention_mask.bool()
        rtd_logits = self.discriminator(corrupted, attention_mask)
        rtd_loss = F.binary_cross_entropy_with_logits(rtd_logits[real].float(), labels[real].float())
        return Losses(mlm_loss + RTD_WEIGHT * rtd_loss, mlm_loss, rtd_loss)


def configs(size: str, vocab_size: int, **overrides):
    return (size_config(size, vocab_size=vocab_size, **overrides),
            size_config(size, vocab_size=vocab_size, generator=True, **overrides))


def build(contender: str, size: str, vocab_size: int, **overrides) -> nn.Module:
    discriminator_config, generator_config = configs(size, vocab_size, **overrides)
    mask_token_id = vocab_size - 1
    torch.manual_seed(0)
    if contender.startswith("transformers"):
        return TransformersRTD(discriminator_config, generator_config, mask_token_id,
                               masked_head=contender == "transformers-masked-head")
    return RTDModel(discriminator_config, generator_config, mask_token_id=mask_token_id, sharing="gdes",
                    rtd_weight=RTD_WEIGHT, mask_rate=MASK_RATE, special_token_ids=SPECIAL_TOKEN_IDS,
                    enhanced_mask_decoder=contender in ("ours", "ours-decoupled"))


def batch(rows: int, length: int, vocab_size: int, device: str):
    """Packed sequences ([CLS] ... [SEP], no padding) of random ordinary tokens."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab_size - 1, (rows, length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    return ids.to(device), torch.ones_like(ids, device=device)


class Trainer:
    """One contender's model, optimizer and masking/sampling generator; ``step`` is one training step."""

    def __init__(self, contender: str, args, batch):
        self.batch = batch
        self.model = build(contender, args.size, args.vocab_size).to(args.device).train()
        # Fused on every device, the same for every contender; one per model for the decoupled update.
        parts = self.model.halves() if contender == "ours-decoupled" else (self.model,)
        self.optimizers = [adamw(part, 1e-4, 0.01, torch.device(args.device), betas=(0.9, 0.98), eps=1e-6,
                                 fused=True) for part in parts]
        self.rng = torch.Generator(device=args.device).manual_seed(2)
        self.device, self.bf16 = args.device, args.dtype == "bf16"
        self.step = self.decoupled_step if contender == "ours-decoupled" else self.joint_step

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def autocast(self):
        return torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16)

    def joint_step(self) -> None:
        self.zero_grad()
        with self.autocast():
            loss = self.model(*self.batch, generator=self.rng).loss
        loss.backward()
        self.optimizers[0].step()

    def decoupled_step(self) -> None:
        self.zero_grad()
        ids, mask = self.batch
        with self.autocast():
            corruption = self.model.generate(ids, mask, generator=self.rng)
        corruption.mlm_loss.backward()
        self.optimizers[0].step()
        with self.autocast():
            out = self.model.discriminate(corruption, mask)
        out.weighted_rtd_loss.backward()
        self.optimizers[1].step()


def check_parity(args, ids, mask) -> float:
    """Largest |loss difference| (total, MLM, RTD) between ours-no-emd and both transformers-built
    steps holding its weights, in eval mode, fp32; raises if above 1e-4."""
    ours = build("ours-no-emd", args.size, args.vocab_size).to(args.device).eval()
    with torch.no_grad():
        ours.discriminator.deberta.embeddings.word_embeddings.delta.normal_(std=0.02)
    generator_state, discriminator_state = ours.generator.state_dict(), ours.discriminator.state_dict()
    worst = 0.0
    for contender in ("transformers", "transformers-masked-head"):
        peer = build(contender, args.size, args.vocab_size).to(args.device).eval()
        missing, unexpected = peer.generator.load_state_dict(generator_state, strict=False)
        # transformers lists its tied decoder (the word embeddings and the head's bias) apart.
        assert set(missing) == {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}, missing
        assert not unexpected, unexpected
        assert peer.generator.cls.predictions.decoder.weight is peer.generator.deberta.embeddings.word_embeddings.weight
        peer.discriminator.load_state_dict(discriminator_state, strict=True)
        with torch.no_grad():
            expected = ours(ids, mask, generator=torch.Generator(device=args.device).manual_seed(3))
            got = peer(ids, mask, generator=torch.Generator(device=args.device).manual_seed(3))
        for name in Losses._fields:
            worst = max(worst, abs(getattr(expected, name).item() - getattr(got, name).item()))
        del peer
    assert worst <= 1e-4, f"transformers-built step disagrees with ours by {worst:.2e}"
    return worst


def measure_memory(args) -> None:
    """Child process: memory of a steady-state step (the second), above model, optimizer state and batch."""
    trainer = Trainer(args.child_memory, args, batch(args.batch, args.length, args.vocab_size, args.device))
    trainer.step()
    trainer.zero_grad()
    release_freed_memory()
    step_bytes, total_bytes = peak_step_bytes(trainer.step, args.device)
    print(json.dumps({"peak_step_bytes": step_bytes, "peak_total_bytes": total_bytes}))


def memory_in_child(contender: str, args) -> dict:
    command = [sys.executable, __file__, "--child-memory", contender, "--size", args.size,
               "--length", str(args.length), "--batch", str(args.batch), "--vocab-size", str(args.vocab_size),
               "--device", args.device, "--dtype", args.dtype]
    if args.threads:
        command += ["--threads", str(args.threads)]
    return json_from_child(command)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="xsmall")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2, help="sequences per step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender before the rounds")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help="bf16 = autocast; default fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--vocab-size", type=int, default=32000,
                        help="32000 by default; 251000 is mdeberta-v3's, where the LM head dominates")
    parser.add_argument("--threads", type=int, help="CPU threads (torch's default otherwise); 1 makes CPU time "
                        "a measure of the work done on a machine shared with other jobs")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child-memory", metavar="CONTENDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = parse_args()
    if args.child_memory:
        measure_memory(args)
        return
    contenders = args.contenders.split(",")
    ids, mask = batch(args.batch, args.length, args.vocab_size, args.device)
    tokens = ids.numel()
    setup = {"machine": machine(args.device), "torch": torch.__version__, "transformers": transformers.__version__,
             "size": args.size, "length": args.length, "batch": args.batch, "tokens_per_step": tokens,
             "vocab_size": args.vocab_size, "device": args.device, "dtype": args.dtype, "rounds": args.rounds,
             "warmup": args.warmup, "threads": torch.get_num_threads()}
    print("; ".join(f"{key} {value}" for key, value in setup.items()), flush=True)
    setup["parity_max_abs_loss_difference"] = check_parity(args, ids, mask)
    print(f"parity: the transformers-built steps match ours-no-emd to {setup['parity_max_abs_loss_difference']:.1e}"
          " (eval, fp32, same weights, batch and masking/sampling seed)", flush=True)

    trainers = {name: Trainer(name, args, (ids, mask)) for name in contenders}
    params = {name: sum(p.numel() for p in trainer.model.parameters()) for name, trainer in trainers.items()}
    medians = interleaved_medians({name: trainer.step for name, trainer in trainers.items()}, args.rounds,
                                  args.device, warmup=args.warmup)
    del trainers
    memory = {name: memory_in_child(name, args) for name in contenders}
    # The model FLOPs pretraining reports MFU with (mdeberta.pretrain.metrics).
    flops = training_flops_per_token(*configs(args.size, args.vocab_size), args.length, MASK_RATE) * tokens
    peak = peak_flops(torch.device(args.device)) if args.dtype == "bf16" else None
    baseline = medians.get("transformers")
    rows = []
    for name in contenders:
        wall, cpu = medians[name]
        row = {"contender": name, "parameters": params[name], "step_s": wall, "step_cpu_s": cpu,
               "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu,
               "peak_step_mb": memory[name]["peak_step_bytes"] / 2**20,
               "peak_total_mb": memory[name]["peak_total_bytes"] / 2**20,
               "speed_vs_transformers": baseline.wall / wall if baseline else None,
               "cpu_speed_vs_transformers": baseline.cpu / cpu if baseline else None,
               "step_memory_vs_transformers": (memory[name]["peak_step_bytes"] / memory["transformers"]["peak_step_bytes"]
                                               if baseline else None),
               "mfu": flops / wall / peak if peak else None}
        rows.append(row)
        print(_format(row), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({**setup, "model_flops_per_step": flops, "rows": rows}, out, indent=1)


def _format(row) -> str:
    ratios = " ".join(f"{key}={row[key]:.2f}" for key in ("speed_vs_transformers", "cpu_speed_vs_transformers",
                                                          "step_memory_vs_transformers", "mfu")
                      if row[key] is not None)
    return (f"{row['contender']:<25} {row['step_s']:7.3f} s (CPU {row['step_cpu_s']:7.3f} s) {row['tokens_per_s']:6.0f} tok/s  "
            f"peak step {row['peak_step_mb']:7.1f} MB (total {row['peak_total_mb']:7.1f} MB)  {ratios}")


if __name__ == "__main__":
    main()
