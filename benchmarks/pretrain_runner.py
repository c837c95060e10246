"""One pretraining throughput measurement; runs under stformer's or the reference's environment.

Reads synthetic cells from an .npz (flat ``tokens`` and ``lengths``), trains ``--warmup`` +
``--steps`` optimizer steps and prints one JSON line: real (non-padding) tokens per second over
the timed steps, padded tokens, FLOPs of the timed steps and peak memory. Used by
``bench_pretrain.py``; the code here is ours, the reference package is only called.
"""

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _memory import peak_rss_kb
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, TrainerCallback, TrainingArguments

p = argparse.ArgumentParser()
p.add_argument("--impl", choices=["stformer", "reference"], required=True)
p.add_argument("--data", type=Path, required=True)
p.add_argument("--steps", type=int, default=12)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--bf16", action="store_true")
p.add_argument("--masked-only", action="store_true", help="stformer: MLM logits only at masked positions")
p.add_argument("--attention-dropout", type=float, default=0.0)
p.add_argument("--no-grouping", action="store_true")
p.add_argument("--stock-kernels", action="store_true", help="stformer: PyTorch's SDPA and nn.Dropout, not its own")
p.add_argument("--layers", type=int, default=6)
p.add_argument("--hidden", type=int, default=256)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--ffn", type=int, default=512)
p.add_argument("--batch", type=int, default=12)
a = p.parse_args()
if a.warmup < 1 or a.steps < 1:
    p.error("--warmup and --steps must be at least 1 (timing starts at the end of the last warm-up step)")

data = np.load(a.data)
tokens, lengths, vocab_size = data["tokens"], data["lengths"], int(data["vocab_size"])
cells = np.split(tokens, np.cumsum(lengths)[:-1])
dataset = Dataset.from_dict({"input_ids": [c.tolist() for c in cells], "length": lengths.tolist()})
vocab = {"<pad>": 0, "<mask>": 1, **{f"G{i}": i for i in range(2, vocab_size)}}
tmp = Path(tempfile.mkdtemp())
(tmp / "lengths.pkl").write_bytes(pickle.dumps(lengths.tolist()))

config = BertConfig(
    vocab_size=vocab_size,
    hidden_size=a.hidden,
    num_hidden_layers=a.layers,
    num_attention_heads=a.heads,
    intermediate_size=a.ffn,
    hidden_act="relu",
    max_position_embeddings=2048,
    pad_token_id=0,
    hidden_dropout_prob=0.02,
    attention_probs_dropout_prob=a.attention_dropout,
)
torch.manual_seed(0)
steps_total = a.warmup + a.steps
common = dict(
    output_dir=str(tmp / "out"),
    per_device_train_batch_size=a.batch,
    max_steps=steps_total,
    learning_rate=1e-3,
    warmup_steps=0,
    weight_decay=0.001,
    save_strategy="no",
    report_to="none",
    logging_steps=10_000,
    bf16=a.bf16,
    use_cpu=True,
    dataloader_num_workers=0,
    seed=0,
    disable_tqdm=True,
)
if a.impl == "stformer":
    from stformer import BertForMaskedGenes, STFormerPretrainer

    model = (BertForMaskedGenes if a.masked_only else BertForMaskedLM)(config)
    args = TrainingArguments(**common, train_sampling_strategy="random" if a.no_grouping else "group_by_length")
    trainer = STFormerPretrainer(
        args, dataset, vocab, tmp / "lengths.pkl", model=model, fast_kernels=not a.stock_kernels
    )  # stock kernels: measure the lever
else:
    from stFormer.pretrain.pretrainer import STFormerPretrainer

    model = BertForMaskedLM(config)
    args = TrainingArguments(**common, group_by_length=not a.no_grouping)
    trainer = STFormerPretrainer(args, dataset, vocab, tmp / "lengths.pkl", model=model)

batches = []  # (real tokens, batch size, padded length, masked tokens) per collated batch, in order
inner = trainer.data_collator


def counting_collator(examples):
    batch = inner(examples)
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int((batch["input_ids"] != 0).sum())
    rows, width = batch["input_ids"].shape
    masked = int((batch["labels"] != -100).sum()) if "labels" in batch else round(0.15 * real)
    batches.append((real, rows, width, masked))
    return batch


trainer.data_collator = counting_collator
times = {}


class Timer(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        times[state.global_step] = time.perf_counter()


trainer.add_callback(Timer())
trainer.train()

timed = batches[a.warmup : steps_total]
seconds = times[steps_total] - times[a.warmup]
L, H, F, V = a.layers, a.hidden, a.ffn, vocab_size
flops = 0
for _real, rows, width, masked in timed:
    padded = rows * width
    per_token_layer = 2 * (4 * H * H + 2 * H * F)  # projections and feed-forward
    attention = 4 * rows * width * width * H  # QK^T and AV per layer
    head_tokens = masked if (a.impl == "stformer" and a.masked_only) else padded
    forward = L * (padded * per_token_layer + attention) + head_tokens * 2 * (H * H + H * V)
    flops += 3 * forward  # backward ~ 2x forward
print(
    json.dumps(
        {
            "tokens_per_s": sum(b[0] for b in timed) / seconds,
            "padding_fraction": 1 - sum(b[0] for b in timed) / sum(b[1] * b[2] for b in timed),
            "tflops": flops / seconds / 1e12,
            "seconds_per_step": seconds / a.steps,
            "peak_gb": peak_rss_kb() / 1e6,
        }
    )
)
