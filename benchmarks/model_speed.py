"""Training-step speed and memory of our DeBERTaV3 encoder against transformers, on one machine.

Contenders, all built from the same config with the same seed, in train mode (dropout 0.1 as in
pretraining), on the same random batch without padding (pretraining packs sequences):
- ``transformers``: transformers' DebertaV2Model (its only attention path: eager, materialised);
- ``ours-eager`` / ``ours-sdpa`` / ``ours-compact`` / ``ours-fused`` / ``ours-flex``: mdeberta.model's
  encoder with each attention backend (``auto``, the default, is fused for CPU training, compact
  where the fused kernel cannot be built, and sdpa on CUDA); fused's kernel is built before
  timing; flex (FlexAttention) trains on CUDA only and without attention-probability dropout,
  so it runs with that dropout at 0;
- ``bert-sdpa``: transformers' BertModel of the same size with SDPA attention: no disentangled
  terms, the practical floor for any DeBERTa implementation;
- peers, where installed (``pip install disentangled-flash flashdeberta``):
  ``disentangled-flash``: transformers' DebertaV2Model with its attention replaced by
  ``disentangled_flash.optimize_deberta_training`` (Triton kernels on CUDA; on CPU its own
  PyTorch path, ``backend="torch"``); ``flashdeberta``: ``flashdeberta.FlashDebertaV2Model``,
  CUDA only (its Triton kernel applies no attention-probability dropout; on CPU it would run
  transformers' eager attention, already measured as ``transformers``).

A step is zero_grad + forward + mean-square loss on the last hidden state + backward (no LM head,
no optimizer). Timing: one warm-up step each, then ``--rounds`` rounds in which every contender
runs one step in turn (interleaved), median per contender. Memory: each contender in a fresh
process, the peak resident set (CPU) or peak allocated memory (CUDA) of one step above what the
built model and batch already hold.

Usage: python benchmarks/model_speed.py [--sizes xsmall,base] [--lengths 128,512] [--threads 1 --cpu-time] [--device cuda --dtype bf16]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import torch
from _timing import interleaved_medians, json_from_child, machine, peak_step_bytes

CONTENDERS = ("transformers", "ours-eager", "ours-sdpa", "ours-compact", "ours-fused", "ours-flex", "bert-sdpa",
              "disentangled-flash", "flashdeberta")
PEERS = {"disentangled-flash": "disentangled_flash", "flashdeberta": "flashdeberta"}  # contender -> module


def unavailable(contender: str, device: str) -> str | None:
    """Why a contender cannot run here, or None when it can."""
    if contender not in CONTENDERS:
        return f"unknown contender; choose from {', '.join(CONTENDERS)}"
    if contender == "flashdeberta" and device != "cuda":
        return "CUDA only (on CPU it runs transformers' eager attention)"
    if contender == "ours-flex" and device != "cuda":
        return "CUDA only (FlexAttention has no CPU backward)"
    if contender in PEERS:
        try:
            importlib.import_module(PEERS[contender])
        except ImportError as error:
            return f"not installed ({error}); pip install {contender}"
    return None


def build(contender: str, size: str, vocab_size: int, device: str, dtype: torch.dtype):
    import transformers

    from mdeberta import model as ours

    config = ours.size_config(size, vocab_size=vocab_size)
    torch.manual_seed(0)
    if contender in ("transformers", "disentangled-flash"):
        net = transformers.DebertaV2Model(config)
        if contender == "disentangled-flash":
            from disentangled_flash import optimize_deberta_training

            net = net.to(device=device, dtype=dtype)
            optimize_deberta_training(net, backend="torch" if device == "cpu" else "triton")
    elif contender == "flashdeberta":
        from flashdeberta import FlashDebertaV2Model

        net = FlashDebertaV2Model(config)
    elif contender.startswith("ours-"):
        if contender == "ours-flex":
            config.attention_probs_dropout_prob = 0.0
        net = ours.build(config, attention=contender.removeprefix("ours-"))
    else:
        bert = transformers.BertConfig(vocab_size=vocab_size, hidden_size=config.hidden_size,
                                       num_hidden_layers=config.num_hidden_layers,
                                       num_attention_heads=config.num_attention_heads,
                                       intermediate_size=config.intermediate_size,
                                       max_position_embeddings=config.max_position_embeddings,
                                       attn_implementation="sdpa")
        net = transformers.BertModel(bert, add_pooling_layer=False)
    return net.to(device=device, dtype=dtype).train()


def batch(length: int, tokens: int, vocab_size: int, device: str):
    rows = max(1, tokens // length)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab_size, (rows, length), generator=g).to(device)
    return ids, torch.ones_like(ids)


def step(net, ids, mask) -> None:
    net.zero_grad(set_to_none=True)
    hidden = net(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden.float().pow(2).mean().backward()


def measure_memory(args) -> None:
    """Child process: the memory one step adds on top of the built model and batch."""
    dtype = getattr(torch, args.dtype_name)
    net = build(args.contender, args.size, args.vocab_size, args.device, dtype)
    ids, mask = batch(args.length, args.tokens, args.vocab_size, args.device)
    peak, _ = peak_step_bytes(lambda: step(net, ids, mask), args.device)
    print(json.dumps({"peak_step_bytes": peak}))


def memory_in_child(contender, size, length, args) -> int:
    command = [sys.executable, __file__, "--child-memory", contender, "--sizes", size, "--lengths", str(length),
               "--tokens", str(args.tokens), "--vocab-size", str(args.vocab_size), "--device", args.device,
               "--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
    return json_from_child(command)["peak_step_bytes"]


def time_contenders(contenders, size, length, args):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    nets = {name: build(name, size, args.vocab_size, args.device, dtype) for name in contenders}
    ids, mask = batch(length, args.tokens, args.vocab_size, args.device)
    steps = {name: (lambda net=net: step(net, ids, mask)) for name, net in nets.items()}
    medians = interleaved_medians(steps, args.rounds, args.device)
    clock = "cpu" if args.cpu_time else "wall"
    return {name: getattr(median, clock) for name, median in medians.items()}, ids.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="xsmall,base")
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per batch (rows = tokens / length)")
    parser.add_argument("--vocab-size", type=int, default=8192,
                        help="small by default so the encoder, not the embedding gradient, is measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time steps by the process's CPU seconds instead of wall seconds: on a shared "
                             "machine, with --threads 1, this measures the work whatever runs beside it")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child-memory", metavar="CONTENDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        args.contender, args.size, args.length = args.child_memory, args.sizes, int(args.lengths)
        args.dtype_name = {"fp32": "float32", "bf16": "bfloat16"}[args.dtype]
        measure_memory(args)
        return

    contenders = []
    for name in args.contenders.split(","):
        reason = unavailable(name, args.device)
        if reason:
            print(f"skipping {name}: {reason}")
        else:
            contenders.append(name)
    if not contenders:
        parser.error("no contender can run here")
    print(f"machine: {machine(args.device)}; torch {torch.__version__}; {args.dtype}; "
          f"{args.tokens} tokens per batch; vocab {args.vocab_size}; median of {args.rounds} interleaved rounds "
          f"of {'CPU' if args.cpu_time else 'wall'} time")
    rows = []
    for size in args.sizes.split(","):
        for length in map(int, args.lengths.split(",")):
            seconds, tokens = time_contenders(contenders, size, length, args)
            memory = {name: memory_in_child(name, size, length, args) for name in contenders}
            for name in contenders:
                rows.append({"size": size, "length": length, "contender": name, "step_s": seconds[name],
                             "tokens_per_s": tokens / seconds[name], "peak_step_mb": memory[name] / 2**20,
                             "speed_vs_transformers": seconds["transformers"] / seconds[name]
                             if "transformers" in seconds else None,
                             "memory_vs_transformers": memory[name] / memory["transformers"]
                             if "transformers" in memory else None,
                             "time_vs_bert": seconds[name] / seconds["bert-sdpa"] if "bert-sdpa" in seconds else None})
                print(_format(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(args.device), "torch": torch.__version__, "dtype": args.dtype,
                       "rows": rows}, out, indent=1)


def _format(row) -> str:
    ratios = " ".join(f"{key}={row[key]:.2f}" for key in ("speed_vs_transformers", "memory_vs_transformers",
                                                          "time_vs_bert") if row[key] is not None)
    return (f"{row['size']:>6} L={row['length']:<4} {row['contender']:<18} {row['step_s']:.3f} s "
            f"{row['tokens_per_s']:8.0f} tok/s  peak {row['peak_step_mb']:7.1f} MB  {ratios}")


if __name__ == "__main__":
    main()
