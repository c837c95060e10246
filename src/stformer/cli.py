"""The ``stformer`` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from ._config import add_dataclass_options, check_keys, config_from_cli, load_config_file
from ._errors import InputError
from ._files import write_json
from .pipeline import STAGES
from .tokenize import TokenizerConfig, compute_gene_medians, tokenize_data, write_gene_medians
from .tokenize._common import InputOptions
from .vocab import build_token_dictionary, save_token_dictionary


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", type=Path, help="h5ad/loom files or folders of them")
    parser.add_argument("--layer", help="matrix to read: X (default), raw, or a layers key")
    parser.add_argument("--gene-id-column", help="var column with gene ids (default: var_names)")
    parser.add_argument("--gene-mapping", type=Path, help="JSON/pickle: file gene id -> vocab id")
    parser.add_argument("--duplicate-genes", choices=["sum", "first", "error"], default="sum")
    parser.add_argument(
        "--total-counts-column",
        default="n_counts",
        help="obs column of per-cell totals, used when present ('' to always compute)",
    )
    parser.add_argument(
        "--accept-normalized",
        action="store_true",
        help="accept non-integer (normalized) values without a warning",
    )
    parser.add_argument("--chunk-size", type=int, help="cells read at once (medians 2048, tokenize 256)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _options(args: argparse.Namespace, cls: type[InputOptions], **extra) -> InputOptions:
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values["total_counts_column"] = args.total_counts_column or None
    return cls(**values, **extra)


def _medians(args: argparse.Namespace) -> None:
    medians = compute_gene_medians(
        args.data,
        method=args.method,
        options=_options(args, InputOptions),
        progress=not args.quiet,
    )
    write_gene_medians(medians, args.out, overwrite=args.overwrite)
    print(f"wrote medians of {len(medians)} genes to {args.out}")


def _vocab(args: argparse.Namespace) -> None:
    from ._files import load_mapping_file

    vocab = build_token_dictionary(load_mapping_file(args.medians))
    save_token_dictionary(vocab, args.out, overwrite=args.overwrite)
    print(f"wrote vocabulary of {len(vocab)} tokens to {args.out}")


def _tokenize(args: argparse.Namespace) -> None:
    metadata = dict(item.split("=", 1) if "=" in item else (item, item) for item in args.columns)
    config = _options(args, TokenizerConfig, metadata_columns=metadata)
    summary = tokenize_data(
        args.data,
        args.out,
        args.medians,
        args.vocab,
        config,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))


def _pretrain(args: argparse.Namespace) -> None:
    from .pretrain import PretrainConfig, pretrain

    config = config_from_cli(PretrainConfig, args, args.config)
    summary = pretrain(
        args.dataset,
        args.out,
        config,
        token_dictionary=args.vocab,
        example_lengths_file=args.lengths,
        resume=args.resume,
    )
    if os.environ.get("RANK", "0") == "0":  # one summary per torchrun launch
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))


def _classifier(args: argparse.Namespace):
    from .classify import GenericClassifier

    options = load_config_file(args.config) if args.config else {}
    if args.metadata_column:
        options["metadata_column"] = args.metadata_column
    if "metadata_column" not in options:
        msg = "give --metadata-column (or metadata_column in --config)"
        raise InputError(msg)
    names = list(inspect.signature(GenericClassifier).parameters)
    check_keys(options, names, source=str(args.config or "command line"), what="GenericClassifier")
    return GenericClassifier(**options)


def _classify(args: argparse.Namespace) -> None:
    from .classify import predict_from_checkpoint

    classifier = _classifier(args)
    needed = {"train": ["model"], "evaluate": ["model", "labels"], "predict": ["model"]}.get(args.action, [])
    missing = [f"--{name}" for name in needed if getattr(args, name) is None]
    if missing:
        msg = f"classify {args.action} needs {' and '.join(missing)}"
        raise InputError(msg)
    if args.action == "prepare":
        data, labels = classifier.prepare_data(str(args.data), str(args.out), args.prefix)
        print(json.dumps({"dataset": data, "id_class_dict": labels}, indent=1))
    elif args.action == "train":
        classifier.train(
            str(args.model),
            str(args.data),
            str(args.out),
            eval_dataset=args.eval_data,
            n_trials=args.n_trials,
            test_size=args.test_size,
            overwrite=args.overwrite,
        )
        print((Path(args.out) / "eval_metrics.json").read_text())
    elif args.action == "evaluate":
        metrics = classifier.evaluate(
            str(args.model), str(args.data), str(args.labels), str(args.out), overwrite=args.overwrite
        )
        print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1")}, indent=1))
    else:
        predicted = predict_from_checkpoint(str(args.model), str(args.data), classifier.classifier_type)
        path = Path(args.out) / "predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(predicted, path, overwrite=True)
        print(f"wrote {len(predicted)} predictions to {path}")


def _embed(args: argparse.Namespace) -> None:
    from .embed import embed, write_embeddings

    result = embed(
        args.model, args.data, layer=args.layer, batch_size=args.batch_size, genes=args.genes, progress=not args.quiet
    )
    write_embeddings(result, args.out, h5ad=args.h5ad, h5ad_out=args.h5ad_out, overwrite=args.overwrite)
    print(f"wrote embeddings of {len(result['cells'])} cells to {args.out}")


def _run(args: argparse.Namespace) -> None:
    from .pipeline import load_run_config, run_pipeline

    config = load_run_config(args.config)
    stages = tuple(args.stages or STAGES)
    log = run_pipeline(config, stages=stages, progress=not args.quiet)
    print(json.dumps(log, indent=1))
    report = Path(config.output_dir) / "report" / "summary.md"
    if report.exists():
        print(report.read_text())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stformer`` command."""
    parser = argparse.ArgumentParser(prog="stformer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("medians", help="per-gene medians of non-zero normalized expression")
    _add_input_options(p)
    p.add_argument("--out", required=True, type=Path, help="output .json (or .pkl)")
    p.add_argument("--method", choices=["tdigest", "exact"], default="tdigest")
    p.set_defaults(func=_medians)

    p = sub.add_parser("vocab", help="token dictionary from a medians file")
    p.add_argument("--medians", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output .json (or .pkl)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_vocab)

    p = sub.add_parser("tokenize", help="rank-value token dataset from h5ad/loom files")
    _add_input_options(p)
    p.add_argument("--medians", required=True, type=Path)
    p.add_argument("--vocab", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--mode", choices=["spot", "neighborhood"], default="spot")
    p.add_argument("--max-length", type=int, help="tokens per cell (2048 spot, 4096 neighborhood)")
    p.add_argument(
        "--column",
        dest="columns",
        action="append",
        default=[],
        metavar="OBS[=NAME]",
        help="obs column to carry into the dataset (repeatable)",
    )
    p.add_argument("--min-count-coverage", type=float, default=0.5)
    p.add_argument("--sample-column", help="obs column naming each cell's sample (slide)")
    p.add_argument("--n-neighbors", type=int, default=6)
    p.add_argument("--radius", type=float, help="neighbor distance cutoff")
    p.add_argument("--spatial-key", default="spatial", help="obsm key of coordinates")
    p.add_argument("--connectivities-key", help="obsp key of a stored neighbor graph")
    p.add_argument("--nproc", type=int, default=1, help="parallel workers (threads; the kernels release the GIL)")
    p.set_defaults(func=_tokenize)

    from .pretrain.config import PretrainConfig

    p = sub.add_parser("pretrain", help="masked-gene pretraining of a BERT model on a token dataset")
    p.add_argument("dataset", type=Path, help="token dataset folder written by `stformer tokenize`")
    p.add_argument("--out", required=True, type=Path, help="output folder (holds run_name/)")
    p.add_argument("--config", type=Path, help="JSON/YAML file of PretrainConfig options")
    p.add_argument("--vocab", type=Path, help="vocabulary (default: the dataset's vocab.json)")
    p.add_argument("--lengths", type=Path, help="lengths pickle (default: the dataset's lengths.pkl)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_dataclass_options(p, PretrainConfig)
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("classify", help="fine-tune, evaluate and apply cell or gene classifiers")
    p.add_argument("action", choices=["prepare", "train", "evaluate", "predict"])
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="prepare: token dataset; train: labeled dataset; evaluate/predict: dataset",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--metadata-column", help="label column (cell classification)")
    p.add_argument("--config", type=Path, help="JSON/YAML of GenericClassifier options")
    p.add_argument("--prefix", default="classifier", help="prepare: output file prefix")
    p.add_argument("--model", type=Path, help="train: pretrained model; evaluate/predict: fine-tuned model")
    p.add_argument("--labels", type=Path, help="evaluate: id_class_dict file")
    p.add_argument("--eval-data", type=Path, help="train: separate evaluation dataset")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--n-trials", type=int, default=0, help="train: Ray Tune trials (needs ray_config)")
    p.add_argument("--overwrite", action="store_true", help="train/evaluate: replace existing outputs")
    p.set_defaults(func=_classify)

    p = sub.add_parser("embed", help="cell (and gene) embeddings from a saved model")
    p.add_argument("data", type=Path, help="token dataset")
    p.add_argument("--model", required=True, type=Path, help="pretrained or fine-tuned model folder")
    p.add_argument("--out", required=True, type=Path, help="output .npz (cells, cell_ids[, genes])")
    p.add_argument("--layer", type=int, default=-1, help="hidden layer (-1: the last)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--genes", action="store_true", help="also gene embeddings averaged over cells")
    p.add_argument("--h5ad", type=Path, help="AnnData to copy with obsm['X_stformer']")
    p.add_argument("--h5ad-out", type=Path, help="where to write that copy (default: *_stformer.h5ad)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_embed)

    p = sub.add_parser("run", help="every stage from h5ad/loom to a classifier, embeddings and a report")
    p.add_argument("config", type=Path, help="YAML/JSON run config (see examples/pbmc.yaml)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), help="run only these stages")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stformer`` command.

    A mistake in the input (:class:`~stformer._errors.InputError`, a missing or existing output
    path) prints one line and exits 1; anything else is a bug in stformer: its traceback is shown,
    with a line asking to report it.
    """
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, FileNotFoundError, FileExistsError) as err:
        print(f"stformer {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(
            f"stformer {args.command}: unexpected error (a bug in stformer); please report it with the traceback above",
            file=sys.stderr,
        )
        return 2
    finally:
        _close_process_group()
    return 0


def _close_process_group() -> None:
    """Tear down the process group of a torchrun launch, so that every rank exits cleanly.

    A gloo group still alive at interpreter exit can abort a rank ("terminate called without an
    active exception") after all its work is written.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
