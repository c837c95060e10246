"""Names shared across stages: special tokens, dataset columns and file names."""

PAD_TOKEN = "<pad>"
MASK_TOKEN = "<mask>"
SPECIAL_TOKENS = (PAD_TOKEN, MASK_TOKEN)  # every dictionary has these
CLS_TOKEN = "<cls>"  # Geneformer V2: first token of each cell
END_TOKENS = ("<eos>", "<sep>")  # Geneformer V2: last token of each cell (its versions name it one or the other)
OTHER_SPECIAL_TOKENS = (CLS_TOKEN, *END_TOKENS, "<unk>")  # non-gene tokens some dictionaries add

# Columns of a tokenized dataset.
INPUT_IDS = "input_ids"
LENGTH = "length"
NEIGHBOR_START = "neighbor_start"  # index where the neighborhood part of a sequence begins
LABEL = "label"  # a cell's class id (cell classification)
LABELS = "labels"  # per-token class ids (gene classification) and the model's label argument
CELL_ID = "cell_id"  # "<file stem>:<obs name>", unique across input files
OBS_NAME = "obs_name"  # the cell's name in its file

# Files written beside a tokenized dataset (inside its directory).
LENGTHS_FILE = "lengths.pkl"
VOCAB_FILE = "vocab.json"
TOKENIZE_SUMMARY_FILE = "tokenize_summary.json"

# Files each stage writes (one owner each: every reader imports the name from here).
STAMPS_DIR = ".stages"  # stformer run: one stamp per stage (fingerprint, seconds, sizes of the files written)
LOG_HISTORY_FILE = "log_history.json"  # pretraining (logging/) and fine-tuning: the Trainer's log history
TRAINING_SUMMARY_FILE = "summary.json"  # pretraining (logging/)
MODEL_DIR = "model"  # a classifier's fine-tuned model, below its output folder
EVAL_DATASET = "eval.dataset"  # a classifier's held-out cells
PREDICTIONS_FILE = "predictions.pkl"  # a classifier's held-out predictions
EVAL_METRICS_FILE = "eval_metrics.json"  # a classifier's held-out metrics
LABELED_SUFFIX, ID_CLASS_SUFFIX = "_labeled.dataset", "_id_class_dict.pkl"  # classify prepare: {prefix}...
CONFUSION_SUFFIX = "_confusion_matrix.png"  # {prefix}_confusion_matrix.png
ARMS_DIR, ARMS_SUMMARY, TRAIN_DATASET = "arms", "arms_summary.json", "train.dataset"  # classify arms (run)
GENES_TABLE, CELLS_TABLE, GENE_SHIFTS = "genes", "cells.parquet", "gene_shifts"  # perturb: genes.csv / .parquet ...
PERTURB_FIGURE, SCREEN_SETTINGS = "perturbation.png", "settings.json"  # perturb (network: its settings.json too)
EDGES_TABLE, COEXPRESSION_TABLE, NETWORK_FIGURE = "edges", "coexpression_edges", "network.png"  # network: edges.csv ...

# The longest cell read when no max_length is given: Geneformer's 2,048 genes; twice that with neighbours.
DEFAULT_MAX_LENGTH = {"spot": 2048, "neighborhood": 4096}

IGNORE_INDEX = -100  # label of positions and examples that carry no loss (transformers' convention)

TARGET_SUM = 10_000  # counts per cell after normalization, as in Geneformer

# The stages of `stformer run`, in order.
STAGES = ("medians", "vocab", "tokenize", "pretrain", "classify", "embed", "perturb", "network", "report")
