"""The ``stformer`` command: one subcommand per pipeline stage.

Every stage's options are generated from its settings dataclass (``MediansConfig``,
``TokenizerConfig``, ``PretrainConfig``, ``ClassifyConfig``, ``EmbedConfig``): each field is a
``--field-name`` option and a key of the command's ``--config`` file (JSON or YAML); options on
the command line override the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ._config import add_dataclass_options, config_from_cli
from ._constants import EDGES_TABLE, EVAL_METRICS_FILE, GENES_TABLE, NETWORK_FIGURE, STAGES
from ._errors import InputError
from ._files import write_json
from .settings import (
    ClassifyConfig,
    EmbedConfig,
    MediansConfig,
    NetworkConfig,
    PerturbConfig,
    PretrainConfig,
    TokenizerConfig,
)


def _medians(args: argparse.Namespace) -> None:
    from .tokenize import compute_gene_medians, write_gene_medians

    config = config_from_cli(MediansConfig, args, args.config)
    medians = compute_gene_medians(args.data, config, progress=not args.quiet)
    write_gene_medians(medians, args.out, overwrite=args.overwrite)
    print(f"wrote medians of {len(medians)} genes to {args.out}")


def _vocab(args: argparse.Namespace) -> None:
    from ._files import load_mapping_file
    from .vocab import build_token_dictionary, save_token_dictionary

    vocab = build_token_dictionary(load_mapping_file(args.medians))
    save_token_dictionary(vocab, args.out, overwrite=args.overwrite)
    print(f"wrote vocabulary of {len(vocab)} tokens to {args.out}")


def _tokenize(args: argparse.Namespace) -> None:
    from .tokenize import tokenize_data

    config = config_from_cli(TokenizerConfig, args, args.config)
    summary = tokenize_data(
        args.data, args.out, args.medians, args.vocab, config, overwrite=args.overwrite, progress=not args.quiet
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))


def _pretrain(args: argparse.Namespace) -> None:
    from .pretrain import pretrain

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


def _classify(args: argparse.Namespace) -> None:
    from .classify import GenericClassifier, predict_from_checkpoint

    config = config_from_cli(ClassifyConfig, args, args.config)
    classifier = GenericClassifier.from_config(config)
    needed = {"prepare": [], "train": ["model"], "evaluate": ["model", "labels"], "predict": ["model"]}[args.action]
    missing = [f"--{name}" for name in needed if getattr(args, name) is None]
    if args.action == "prepare" and config.classifier_type == "sequence" and config.metadata_column is None:
        missing.append("--metadata-column")
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
            test_size=config.test_size,
            overwrite=args.overwrite,
        )
        print((Path(args.out) / EVAL_METRICS_FILE).read_text())
    elif args.action == "evaluate":
        metrics = classifier.evaluate(
            str(args.model), str(args.data), str(args.labels), str(args.out), overwrite=args.overwrite
        )
        print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1")}, indent=1))
    else:
        predicted = predict_from_checkpoint(
            str(args.model), str(args.data), config.classifier_type, batch_size=config.forward_batch_size
        )
        path = Path(args.out) / "predictions.json"
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank holds them all, in dataset order
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(predicted, path, overwrite=args.overwrite)
            print(f"wrote {len(predicted)} predictions to {path}")


def _embed(args: argparse.Namespace) -> None:
    from ._distributed import ranks
    from .embedding import embed, write_embeddings

    config = config_from_cli(EmbedConfig, args, args.config)
    result = embed(args.model, args.data, config, out=args.out, overwrite=args.overwrite, progress=not args.quiet)
    if args.h5ad is not None and ranks()[0] == 0:
        write_embeddings(result, None, h5ad=args.h5ad, h5ad_out=args.h5ad_out, overwrite=args.overwrite)
    if ranks()[0] == 0:
        print(f"wrote embeddings of {len(result['cells'])} cells to {args.out}")


def _perturb(args: argparse.Namespace) -> None:
    from .perturbation import perturb

    genes = perturb(
        args.model,
        args.data,
        args.out,
        config_from_cli(PerturbConfig, args, args.config),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    columns = ("gene", "symbol", "n_cells", "effect", "effect_ci_low", "effect_ci_high", "p_value", "fdr")
    print(genes[list(columns)].head(20).to_string(index=False))
    if genes.attrs["state_separation"] is not None:
        print(f"the model's embeddings separate the screened cells from the goal state's with a nearest-centroid "
              f"balanced accuracy of {genes.attrs['state_separation']:.2f} (chance 0.5)")  # fmt: skip
    skipped = genes.attrs["skipped"]
    print(f"wrote {len(genes)} genes to {args.out}/{GENES_TABLE}.csv ({skipped} perturbations changed nothing)")


def _network(args: argparse.Namespace) -> None:
    from .network import network
    from .network.statistics import discoveries, most_significant

    config = config_from_cli(NetworkConfig, args, args.config)
    edges = network(args.model, args.data, args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    print(edges[["source_symbol", "target_symbol", "weight", "n_cells"]].head(20).to_string(index=False))
    if config.states:
        first, second = config.states
        print(f"most significant differences, {first} minus {second} ({discoveries(edges)}):")
        shown = ["source_symbol", "target_symbol", f"weight_{first}", f"weight_{second}", "difference"]
        shown += ["p_value", "fdr"]
        print(most_significant(edges)[shown].head(10).to_string(index=False))
    shared = edges.attrs["overlap"]
    print(f"the {shared['k']} strongest attention and co-expression gene pairs share {shared['shared']} "
          f"({shared['expected']} expected by chance)")  # fmt: skip
    print(
        f"wrote {len(edges)} edges to {args.out}/{EDGES_TABLE}.csv, the network figure to {args.out}/{NETWORK_FIGURE}"
    )


def _run(args: argparse.Namespace) -> None:
    from .pipeline import run_pipeline
    from .settings import load_run_config

    config = load_run_config(args.config)
    log = run_pipeline(config, stages=tuple(args.stages or STAGES), progress=not args.quiet)
    print(json.dumps(log, indent=1))
    report = Path(config.output_dir) / "report" / "summary.md"
    if report.exists():
        print(report.read_text())


def _command(sub, name: str, help: str, func, settings: type | None = None) -> argparse.ArgumentParser:
    """A subcommand; with ``settings``, a ``--config`` file and one option per field of that dataclass."""
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(func=func)
    if settings is not None:
        parser.add_argument("--config", type=Path, help=f"JSON/YAML file of {settings.__name__} options")
    return parser


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``stformer`` command."""
    parser = argparse.ArgumentParser(prog="stformer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "medians", "per-gene medians of non-zero normalized expression", _medians, MediansConfig)
    p.add_argument("data", nargs="+", type=Path, help="h5ad/loom files or folders of them")
    p.add_argument("--out", required=True, type=Path, help="output .json (or .pkl)")
    _add_output_flags(p)
    add_dataclass_options(p, MediansConfig)

    p = _command(sub, "vocab", "token dictionary from a medians file", _vocab)
    p.add_argument("--medians", required=True, type=Path, help="gene medians file (.json/.pkl) from stformer medians")
    p.add_argument("--out", required=True, type=Path, help="output .json (or .pkl)")
    _add_output_flags(p)

    p = _command(sub, "tokenize", "rank-value token dataset from h5ad/loom files", _tokenize, TokenizerConfig)
    p.add_argument("data", nargs="+", type=Path, help="h5ad/loom files or folders of them")
    p.add_argument("--medians", required=True, type=Path, help="gene medians (.json/.pkl)")
    p.add_argument("--vocab", required=True, type=Path, help="token dictionary (.json/.pkl)")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    _add_output_flags(p)
    add_dataclass_options(p, TokenizerConfig)

    p = _command(sub, "pretrain", "masked-gene pretraining of a BERT model", _pretrain, PretrainConfig)
    p.add_argument("dataset", type=Path, help="token dataset folder written by `stformer tokenize`")
    p.add_argument("--out", required=True, type=Path, help="output folder (holds run_name/)")
    p.add_argument("--vocab", type=Path, help="vocabulary (default: the dataset's vocab.json)")
    p.add_argument("--lengths", type=Path, help="lengths pickle (default: the dataset's lengths.pkl)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_options(p, PretrainConfig)

    p = _command(sub, "classify", "fine-tune, evaluate and apply cell or gene classifiers", _classify, ClassifyConfig)
    p.add_argument("action", choices=["prepare", "train", "evaluate", "predict"])
    p.add_argument("--data", required=True, type=Path, help="prepare: tokens; train: labeled data; else: any dataset")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--prefix", default="classifier", help="prepare: output file prefix")
    p.add_argument("--model", type=Path, help="train: pretrained model; evaluate/predict: fine-tuned model")
    p.add_argument("--labels", type=Path, help="evaluate: id_class_dict file")
    p.add_argument("--eval-data", type=Path, help="train: separate evaluation dataset")
    p.add_argument("--n-trials", type=int, default=0, help="train: Ray Tune trials (needs ray_config)")
    _add_output_flags(p)
    add_dataclass_options(p, ClassifyConfig)

    p = _command(sub, "embed", "cell (and gene) embeddings from a saved model", _embed, EmbedConfig)
    p.add_argument("data", type=Path, help="token dataset")
    p.add_argument("--model", required=True, type=Path, help="pretrained or fine-tuned model folder")
    p.add_argument("--out", required=True, type=Path, help="output folder: cells.npy, cell_ids.npy[, genes.npy]")
    p.add_argument("--h5ad", type=Path, help="one of the tokenized files, copied with obsm['X_stformer']")
    p.add_argument("--h5ad-out", type=Path, help="where to write that copy (default: *_stformer.h5ad)")
    _add_output_flags(p)
    add_dataclass_options(p, EmbedConfig)

    p = _command(
        sub,
        "perturb",
        "in silico perturbation screen: which genes move cells, and toward what",
        _perturb,
        PerturbConfig,
    )
    p.add_argument("data", type=Path, help="token dataset")
    p.add_argument("--model", required=True, type=Path, help="pretrained or fine-tuned model folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (genes.csv, cells.parquet, perturbation.png)")
    _add_output_flags(p)
    add_dataclass_options(p, PerturbConfig)

    p = _command(
        sub,
        "network",
        "gene network from the model's attention, per cell state and between states",
        _network,
        NetworkConfig,
    )
    p.add_argument("data", type=Path, help="token dataset")
    p.add_argument("--model", required=True, type=Path, help="pretrained or fine-tuned model folder")
    p.add_argument(
        "--out", required=True, type=Path, help="output folder (edges.csv, coexpression_edges.csv, network.png)"
    )
    _add_output_flags(p)
    add_dataclass_options(p, NetworkConfig)

    p = _command(sub, "run", "every stage from h5ad/loom to a classifier, embeddings and a report", _run)
    p.add_argument("config", type=Path, help="YAML/JSON run config (see examples/pbmc.yaml)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), help="run only these stages")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stformer`` command.

    A mistake in the input (:class:`~stformer.InputError`, a missing or existing output path)
    prints one line and exits 1; anything else is a bug in stformer: its traceback is shown, with
    a line asking to report it, and the exit status is 2.
    """
    args = build_parser().parse_args(argv)
    quiet_before = os.environ.get("TQDM_DISABLE")
    if args.quiet:  # the bars of the Trainer and the datasets library as well as stformer's own
        os.environ["TQDM_DISABLE"] = "1"
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
        if quiet_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet_before
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
