"""The ``mdeberta`` command: one subcommand group per pipeline stage.

Expected failures (bad input, bad settings) print one line naming the file or setting and exit
with status 2; a stage that finished with failed shards exits with 1.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .recipe import section_settings
from .settings import SettingsError, add_settings_arguments, given_overrides

EPILOG = "Run `mdeberta STAGE --help` for a stage's commands."


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)
        # argparse sizes the command column from the first command listed; leave room for all.
        self._action_max_length = 16


def _group(stages, name: str, help: str, description: str):
    """A stage's group of commands (``mdeberta NAME COMMAND``); returns where they are added."""
    group = stages.add_parser(name, help=help, description=description, formatter_class=_Formatter)
    return group.add_subparsers(title="commands", metavar="COMMAND", required=True)


def _command(verbs, name: str, **texts) -> argparse.ArgumentParser:
    return verbs.add_parser(name, formatter_class=_Formatter, **texts)


def _corpus_prepare(args: argparse.Namespace) -> int:
    from .corpora.stage import CorpusStage
    from .corpora.settings import CorpusSettings

    overrides = given_overrides(args, CorpusSettings)
    if args.input_paths:
        overrides["inputs"] = args.input_paths
    settings = section_settings(CorpusSettings, args.recipe, "corpus", overrides)
    if (args.shard_index is None) != (args.num_shards is None):
        raise SettingsError("--shard-index and --num-shards go together")
    if args.shard_index is not None and not 0 <= args.shard_index < args.num_shards:
        raise SettingsError(f"--shard-index must be in 0..{args.num_shards - 1}, got {args.shard_index}")
    if args.dedup_task is not None:
        if not settings.dedup_tasks:
            raise SettingsError("--dedup-task needs --dedup-tasks (the number of jobs in the array)")
        if not 0 <= args.dedup_task < settings.dedup_tasks:
            raise SettingsError(f"--dedup-task must be in 0..{settings.dedup_tasks - 1}, got {args.dedup_task}")
        if args.shard_index is not None or args.merge or not settings.dedup:
            raise SettingsError("--dedup-task runs alone: not with --shard-index, --merge or --no-dedup")
    stage = CorpusStage(settings, args.out, progress=not args.no_progress)
    return stage.run(args.shard_index, args.num_shards or 1, merge_only=args.merge, force=args.force,
                     dedup_task=args.dedup_task)


def _corpus_languages(args: argparse.Namespace) -> int:
    import pandas as pd

    from .corpora.langid import LanguageIdentifier
    from .corpora.languages import CC100_TABLE, XNLI_LANGUAGES

    table = pd.read_csv(CC100_TABLE, keep_default_na=False)
    labels = LanguageIdentifier(args.lid_model).labels()
    base = table.code.str.split(r"[_-]").str[0]
    table["lid_label"] = [code if code in labels else "(none)" for code in base]
    table["xnli"] = ["yes" if code in XNLI_LANGUAGES else "" for code in base]
    print(table[["code", "name", "tokens_m", "size_gib", "download_xz", "lid_label", "xnli"]].to_markdown(index=False))
    print("\nGroups for --langs: xnli (the 15 XNLI languages), cc100 (every CC-100 language the model labels).")
    print("Languages may also be given by English name, e.g. --langs swahili,urdu.")
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from .tokenizer.settings import TokenizerSettings
    from .tokenizer.stage import TokenizerStage

    settings = section_settings(TokenizerSettings, args.recipe, "tokenizer", given_overrides(args, TokenizerSettings))
    return TokenizerStage(settings, args.corpus, args.out, progress=not args.no_progress).run(force=args.force)


def _tokenizer_report(args: argparse.Namespace) -> int:
    from .tokenizer.report import run_report

    print(run_report(args.tokenizer, args.corpus, args.compare, args.langs, args.lines, args.seed, args.out))
    return 0


def _add_tokenizer_group(stages) -> None:
    from .tokenizer.settings import TokenizerSettings

    verbs = _group(stages, "tokenizer", help="stage 2: shards -> SentencePiece vocabulary for transformers",
                   description="Stage 2: train a language-balanced SentencePiece unigram vocabulary and save it as a "
                               "transformers tokenizer.")

    train = _command(
        verbs, "train", help="train the vocabulary on an alpha-balanced sample of the corpus",
        description="Draw a language-balanced sample of lines from CORPUS/<lang>/part-*.parquet, train a "
                    "SentencePiece unigram model with DeBERTa's special ids and byte fallback, and write "
                    "OUT/spm.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json, "
                    "sample_stats.json, report.md|json, a model card README.md and manifest.json. "
                    "transformers.AutoTokenizer.from_pretrained(OUT) gives SentencePiece's ids.",
        epilog="examples:\n"
               "  mdeberta tokenizer train --corpus work/corpus --out work/tokenizer --vocab-size 8000 --sentences 20000\n"
               "  mdeberta tokenizer train --corpus corpus --out tokenizer   # 250K pieces, 1M lines, alpha 0.3\n"
               "  mdeberta tokenizer train --recipe recipes/demo.toml --corpus work/corpus --out work/tokenizer")
    train.add_argument("--corpus", required=True, metavar="DIR", help="output folder of `mdeberta corpus prepare`")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (the tokenizer)")
    train.add_argument("--recipe", metavar="TOML", help="recipe whose [tokenizer] section sets defaults")
    run = train.add_argument_group("run control")
    run.add_argument("--force", action="store_true", help="retrain even if up to date")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(train, TokenizerSettings)
    train.set_defaults(handler=_tokenizer_train)

    report = _command(
        verbs, "report", help="fertility and unknown rate per language, beside other tokenizers",
        description="Per language: fertility (pieces per word; per character for scripts without spaces), "
                    "unknown-token and byte-fallback rates, share of the vocabulary used. Writes report.md "
                    "and report.json and prints the table.",
        epilog="examples:\n"
               "  mdeberta tokenizer report --tokenizer work/tokenizer --corpus work/corpus\n"
               "  mdeberta tokenizer report --tokenizer tok --corpus corpus --compare xlm-roberta-base/ --out cmp/")
    report.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder to measure")
    report.add_argument("--corpus", required=True, metavar="DIR", help="output folder of `mdeberta corpus prepare`")
    report.add_argument("--compare", nargs="+", default=[], metavar="DIR",
                        help="other transformers tokenizer folders to show side by side")
    report.add_argument("--langs", type=lambda v: [x for x in v.split(",") if x], default=[], metavar="A,B,...",
                        help="languages to measure (default: all in the corpus)")
    report.add_argument("--lines", type=int, default=1000, metavar="N", help="lines drawn per language (default: 1000)")
    report.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    report.add_argument("--out", metavar="DIR", help="where report.md|json go (default: the tokenizer folder)")
    report.set_defaults(handler=_tokenizer_report)


def _pretrain_run(args: argparse.Namespace) -> int:
    from .pretrain.settings import PretrainSettings
    from .pretrain.stage import run_pretraining

    settings = section_settings(PretrainSettings, args.recipe, "pretrain", given_overrides(args, PretrainSettings))
    return run_pretraining(settings, args.corpus, args.tokenizer, args.out, resume=args.resume,
                           progress=not args.no_progress)


def _pretrain_export(args: argparse.Namespace) -> int:
    from .pretrain.export import export_checkpoint

    for name, folder in export_checkpoint(args.checkpoint, args.out).items():
        print(f"{name}: {folder}")
    return 0


def _pretrain_analyze(args: argparse.Namespace) -> int:
    from .pretrain.analyze import embedding_statistics, write_statistics

    table = embedding_statistics(args.checkpoint, args.pairs, args.seed, args.tokens)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    if args.out:
        write_statistics(table, args.out)
    return 0


def _pretrain_plot(args: argparse.Namespace) -> int:
    from .pretrain.plot import labelled, write_overlay

    print(write_overlay(labelled(args.runs), args.out))
    return 0


def _add_pretrain_group(stages) -> None:
    from pathlib import Path

    from .pretrain.settings import PretrainSettings

    verbs = _group(stages, "pretrain", help="stage 3: shards + tokenizer -> DeBERTaV3 (RTD + GDES)",
                   description="Stage 3: pretrain a DeBERTaV3 generator/discriminator pair with replaced token "
                               "detection and embedding sharing, and export it as transformers deberta-v2 folders.")

    run = _command(
        verbs, "run", help="tokenize the corpus and train; continues from the last checkpoint",
        description="Tokenize CORPUS with the TOKENIZER's spm.model into OUT/tokens (once), then train: "
                    "packed sequences with languages drawn by p_i^alpha, RTD loss L_MLM + lambda L_RTD, "
                    "AdamW with warm-up and linear decay. Writes OUT/metrics.jsonl, OUT/curves.png "
                    "(redrawn at each validation) and OUT/checkpoints/step-N; a rerun continues from the latest "
                    "checkpoint. It prints its plan (parameters, tokens per step, micro-batches) before the first "
                    "step. SIGTERM or Ctrl-C stops at the next micro-batch and saves the last completed step; a "
                    "second Ctrl-C stops at once. Multi-GPU: start it with torchrun.",
        epilog="examples:\n"
               "  mdeberta pretrain run --recipe recipes/demo.toml --corpus work/corpus --tokenizer work/tokenizer "
               "--out work/pretrain\n"
               "  mdeberta pretrain run --corpus corpus --tokenizer tok --out run --size xsmall --max-steps 1000\n"
               "  torchrun --nproc_per_node=8 -m mdeberta pretrain run --corpus corpus --tokenizer tok --out run")
    run.add_argument("--corpus", required=True, metavar="DIR", help="output folder of `mdeberta corpus prepare`")
    run.add_argument("--tokenizer", required=True, metavar="DIR", help="output folder of `mdeberta tokenizer train`")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder of the run")
    run.add_argument("--recipe", metavar="TOML", help="recipe whose [pretrain] section sets defaults")
    control = run.add_argument_group("run control")
    control.add_argument("--resume", action="store_true",
                         help="require a checkpoint to continue from (a rerun continues anyway when one exists)")
    control.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(run, PretrainSettings)
    run.set_defaults(handler=_pretrain_run)

    export = _command(
        verbs, "export", help="checkpoint -> transformers discriminator and generator",
        description="Write OUT/discriminator (DebertaV2Model with the merged GDES embedding E_G + E_delta) and "
                    "OUT/generator (DebertaV2ForMaskedLM, run without the Enhanced Mask Decoder, which "
                    "transformers lacks), each with the tokenizer files, loadable with "
                    "transformers.AutoModel / AutoModelForMaskedLM.from_pretrained.",
        epilog="example:\n  mdeberta pretrain export --checkpoint work/pretrain/checkpoints/step-200 --out work/model")
    export.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="a step-N checkpoint folder")
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the two folders go")
    export.set_defaults(handler=_pretrain_export)

    analyze = _command(
        verbs, "analyze", help="average cosine similarity of E_G, E_D, E_delta (Table 1)",
        description="DeBERTaV3's Table 1 for one checkpoint: the average cosine similarity of word-embedding "
                    "pairs drawn uniformly from the token ids seen in training (special tokens left out), "
                    "beside the paper's base-size figures.",
        epilog="example:\n  mdeberta pretrain analyze --checkpoint work/pretrain/checkpoints/step-200")
    analyze.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="a step-N checkpoint folder")
    analyze.add_argument("--pairs", type=int, default=100_000, metavar="N", help="pairs drawn (default: 100000)")
    analyze.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    analyze.add_argument("--tokens", type=Path, metavar="DIR",
                         help="token streams whose ids are drawn (default: the run's own OUT/tokens)")
    analyze.add_argument("--out", type=Path, metavar="JSON", help="also write the table as JSON")
    analyze.set_defaults(handler=_pretrain_analyze)

    plot = _command(
        verbs, "plot", help="several runs' training curves over each other in one PNG",
        description="Draw the curves of RUN/metrics.jsonl of each run in one picture: generator MLM loss and "
                    "accuracy, RTD loss, accuracy and AUC, the total loss, learning rate and tokens/s; "
                    "training records as solid lines, validations dashed. Each run is labelled by its folder "
                    "name (with the embedding sharing its settings.json records). A run draws its own "
                    "RUN/curves.png as it trains; this compares runs, finished or still going.",
        epilog="examples:\n"
               "  mdeberta pretrain plot ablation/pretrain-es ablation/pretrain-nes ablation/pretrain-gdes "
               "--out sharing.png\n"
               "  mdeberta pretrain plot runs/lr-3e-4 runs/lr-6e-4 --out lr.png")
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="--out folders of `mdeberta pretrain run`")
    plot.add_argument("--out", required=True, type=Path, metavar="PNG", help="the picture to write")
    plot.set_defaults(handler=_pretrain_plot)


def _xnli_run(args: argparse.Namespace) -> int:
    from .xnli.settings import XnliSettings
    from .xnli.stage import XnliRun

    overrides = given_overrides(args, XnliSettings)
    if args.seeds is None:  # --seeds is its own flag (space-separated); not given: the recipe's
        overrides.pop("seeds")
    settings = section_settings(XnliSettings, args.recipe, "xnli", overrides)
    return XnliRun(settings, args.model, args.data, args.out, progress=not args.no_progress).run(force=args.force)


def _xnli_report(args: argparse.Namespace) -> int:
    from .xnli.report import PUBLISHED, markdown_table, write_report

    tables = write_report(args.run_dirs, args.out, args.published or PUBLISHED, args.compare)
    print(markdown_table(tables["test"]))
    return 0


def _add_xnli_group(stages) -> None:
    from .xnli.data import DEFAULT_DATA
    from .xnli.report import COMPARED
    from .xnli.settings import XnliSettings

    verbs = _group(stages, "xnli", help="stage 4: fine-tune on XNLI and report accuracy per language",
                   description="Stage 4: fine-tune a deberta-v2 model on XNLI (zero-shot or translate-train-all) and "
                               "report test accuracy in 15 languages beside the published rows.")

    run = _command(
        verbs, "run", help="fine-tune per seed, evaluate every language, write the report",
        description="Fine-tune MODEL with a 3-way classification head (zero-shot: English training pairs, "
                    "selected on English dev; translate-train-all: all 15 training sets, selected on their "
                    "mean dev accuracy), evaluate dev and test in every language, and write OUT/results.csv|"
                    "json|md, OUT/xnli.png, OUT/predictions/, OUT/<setting>/seed-<s>/best/ (the selected checkpoint, "
                    "loadable by transformers' DebertaV2ForSequenceClassification) and OUT/manifest.json. "
                    "A killed run continues from its last evaluation when rerun; under torchrun each process "
                    "trains on its share of every batch.",
        epilog="examples:\n"
               "  mdeberta xnli run --model microsoft/mdeberta-v3-base --out runs/zs --seeds 1 2 3\n"
               "  mdeberta xnli run --model work/model/discriminator --setting translate-train-all --data xnli/ --out runs/tta\n"
               "  mdeberta xnli run --recipe recipes/demo.toml --model work/model/discriminator --data eval/sample --out work/xnli\n"
               "  torchrun --nproc-per-node 8 -m mdeberta xnli run --model M --out runs/zs")
    run.add_argument("--model", required=True, metavar="M",
                     help="deberta-v2 folder (e.g. an exported discriminator) or hub name, with its tokenizer")
    run.add_argument("--data", default=DEFAULT_DATA, metavar="D",
                     help="hub dataset name, a folder of saved datasets per language (D/<lang>), or a folder "
                          f"holding the unpacked XNLI-1.0/ and XNLI-MT-1.0/ (default: {DEFAULT_DATA})")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.add_argument("--recipe", metavar="TOML", help="recipe whose [xnli] section sets defaults")
    run.add_argument("--seeds", nargs="+", type=int, metavar="S", help="one fine-tuning run per seed (default: 1)")
    control = run.add_argument_group("run control")
    control.add_argument("--force", action="store_true", help="start afresh, even if finished or half done")
    control.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(run, XnliSettings)
    run.set_defaults(handler=_xnli_run)

    report = _command(
        verbs, "report", help="rebuild and merge reports from saved predictions",
        description="Recompute accuracies from RUN_DIR/predictions of one or more runs (settings, seeds, "
                    "models) and write one merged results.csv|json|md and xnli.png into OUT.",
        epilog="examples:\n"
               "  mdeberta xnli report runs/zs runs/tta --out runs/report")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="--out folders of `mdeberta xnli run`")
    report.add_argument("--out", required=True, metavar="DIR", help="where the merged report goes")
    report.add_argument("--published", metavar="CSV", help="published rows (default: eval/xnli_published.csv)")
    report.add_argument("--compare", type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
                        default=list(COMPARED), metavar="A,B,...",
                        help=f"published models shown (default: {','.join(COMPARED)})")
    report.set_defaults(handler=_xnli_report)


def _pipeline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .pipeline import STAGES, Pipeline

    workdir = args.workdir or Path("work") / Path(args.recipe).stem
    return Pipeline(args.recipe, workdir, args.first or STAGES[0], args.last or STAGES[-1], tuple(args.force),
                    progress=not args.no_progress).run()


def _add_pipeline_group(stages) -> None:
    from .pipeline import STAGES

    pipeline = stages.add_parser(
        "pipeline", help="every stage of a recipe in order, skipping finished ones",
        description="Run corpus -> tokenizer -> pretrain -> export -> xnli from one recipe, each stage in its own\n"
                    "folder of WORKDIR: corpus/, tokenizer/, pretrain/, model/ (the exported last checkpoint),\n"
                    "xnli/<setting>/ and the XNLI report xnli/results.md.\n\n"
                    "A stage that is up to date with its inputs and settings is skipped, an interrupted one\n"
                    "continues, and a stage that ran makes every later one redo its work. The closing table\n"
                    "lists each stage with its status, time and folder. With [pipeline] sharing = [\"es\",\n"
                    "\"nes\", \"gdes\"] the model stages run once per sharing (pretrain-<sharing>/, ...) and\n"
                    "WORKDIR/ablation.md compares them, with their pretraining curves in WORKDIR/ablation.png.\n"
                    "Runs in one process: for several GPUs, start the pretrain and xnli stages themselves\n"
                    "under torchrun (see docs/scale.md).",
        epilog="examples:\n"
               "  mdeberta pipeline recipes/demo.toml --workdir work\n"
               "  mdeberta pipeline recipes/demo.toml --workdir work --force pretrain   # retrain, re-export, re-evaluate\n"
               "  mdeberta pipeline recipes/mdeberta-v3-base.toml --workdir run --until tokenizer\n"
               "  mdeberta pipeline recipes/gdes-ablation.toml --workdir ablation")
    pipeline.add_argument("recipe", metavar="RECIPE.toml",
                          help="sections [corpus] [tokenizer] [pretrain] [xnli] [pipeline] (see recipes/)")
    pipeline.add_argument("--workdir", metavar="DIR", help="where the stage folders go (default: work/<recipe name>)")
    pipeline.add_argument("--from", dest="first", choices=STAGES, metavar="STAGE", help="start at this stage (the earlier ones must "
                          "have finished)")
    pipeline.add_argument("--until", dest="last", choices=STAGES, metavar="STAGE", help="stop after this stage "
                          f"(stages: {', '.join(STAGES)})")
    pipeline.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE",
                          help="redo this stage even if up to date, and so every later one (repeatable; within "
                          "--from/--until)")
    pipeline.add_argument("--no-progress", action="store_true", help="no progress bars")
    pipeline.set_defaults(handler=_pipeline)


def build_parser() -> argparse.ArgumentParser:
    from .corpora.settings import CorpusSettings

    parser = argparse.ArgumentParser(
        prog="mdeberta", formatter_class=_Formatter, epilog=EPILOG,
        description="Pretrain a multilingual DeBERTaV3 from raw web text, stage by stage.")
    stages = parser.add_subparsers(title="commands", metavar="STAGE", required=True)

    verbs = _group(stages, "corpus", help="stage 1: raw text -> clean per-language shards",
                   description="Stage 1: clean, deduplicate and language-identify CC100-style text into per-language "
                               "Parquet shards.")

    prepare = _command(
        verbs, "prepare", help="clean, deduplicate and language-identify text",
        description="Normalise, filter, deduplicate and language-identify text into "
                    "OUT/<lang>/part-NNNNN.parquet with OUT/stats.json|csv and OUT/manifest.json.",
        epilog="examples:\n"
               "  mdeberta corpus prepare corpora/sample --out work/corpus --langs xnli\n"
               "  mdeberta corpus prepare cc100/ --out corpus --shard-index $SLURM_ARRAY_TASK_ID --num-shards 64\n"
               "  mdeberta corpus prepare cc100/ --out corpus --dedup-tasks 64 --dedup-task $SLURM_ARRAY_TASK_ID\n"
               "  mdeberta corpus prepare cc100/ --out corpus --dedup-tasks 64 --merge")
    prepare.add_argument("input_paths", nargs="*", metavar="INPUT",
                         help="files or folders: CC100 text (.txt, .xz, .gz), JSONL, Parquet, a saved HF dataset")
    prepare.add_argument("--out", required=True, metavar="DIR", help="output folder")
    prepare.add_argument("--recipe", metavar="TOML", help="recipe whose [corpus] section sets defaults")
    run = prepare.add_argument_group("run control")
    run.add_argument("--shard-index", type=int, metavar="I", help="clean only input shards with index %% N == I "
                     "(one job of a cluster array); finish with --merge")
    run.add_argument("--num-shards", type=int, metavar="N", help="number of jobs in the array")
    run.add_argument("--dedup-task", type=int, metavar="T", help="run dedup task T of --dedup-tasks (one job of a "
                     "cluster array, after the --shard-index jobs); finish with --merge")
    run.add_argument("--merge", action="store_true", help="deduplicate (the tasks not run yet) and write the shards "
                     "cleaned by --shard-index jobs")
    run.add_argument("--force", action="store_true", help="redo everything, even if up to date")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(prepare, CorpusSettings)
    prepare.set_defaults(handler=_corpus_prepare)

    languages = _command(
        verbs, "languages", help="list the languages --langs accepts, with CC-100 sizes",
        description="The CC-100 languages with their sizes (XLM-R, Table 6), the language-ID model's label for "
                    "each, and the XNLI languages.")
    languages.add_argument("--lid-model", metavar="PATH", help="language-ID model (default: lid.176.ftz)")
    languages.set_defaults(handler=_corpus_languages)

    _add_tokenizer_group(stages)
    _add_pretrain_group(stages)
    _add_xnli_group(stages)
    _add_pipeline_group(stages)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as err:
        print(f"mdeberta: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. an output folder that cannot be written
        print(f"mdeberta: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mdeberta: interrupted; run the same command again: finished work is kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
