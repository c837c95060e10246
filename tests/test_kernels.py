import copy
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import BertConfig, BertModel

import stformer._kernels.attention as attention
import stformer._kernels.native as kernels
import stformer._kernels.passes as passes
from stformer._kernels import ATTENTION, BertModelInPasses, Dropout16, stformer_attention, use_fast_kernels
from stformer._kernels.attention import _BlockedAttention
from stformer.classify.model import BertForCellClassification
from stformer.pretrain.model import BertForMaskedGenes

CONFIG = BertConfig(
    vocab_size=300,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    max_position_embeddings=700,
)


def test_blocked_attention_is_exact_attention_over_each_prefix():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 600, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    lengths = [600, 300]  # 600 spans three query blocks
    valid = (torch.arange(600) < torch.tensor(lengths)[:, None])[:, None, :, None]  # (batch, 1, seq, 1)
    weights = torch.randn(2, 3, 600, 16, dtype=torch.float64) * valid
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=valid.transpose(2, 3))
    (expected * weights).sum().backward()
    expected_grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    got = _BlockedAttention.apply(q, k, v, lengths, 16**-0.5).transpose(1, 2)  # (batch, seq, heads, d) in
    (got * weights).sum().backward()
    torch.testing.assert_close(got * valid, expected * valid)
    assert not got[1, :, 300:].any()  # padding rows are zero
    for grad, want in zip((q.grad, k.grad, v.grad), expected_grads, strict=True):
        torch.testing.assert_close(grad, want, rtol=1e-6, atol=1e-6)


def _gradients(model, ids, mask, bf16):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = torch.linspace(-1, 1, hidden.shape[-1])
    (hidden.float() * target * mask[..., None]).sum().backward()
    return hidden.float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("native", [True, False])
def test_bf16_model_matches_fp32_as_closely_as_sdpa(monkeypatch, native):
    monkeypatch.setattr(kernels, "NATIVE", kernels.NATIVE and native)
    blocked_calls = []
    original = _BlockedAttention.apply
    monkeypatch.setattr(_BlockedAttention, "apply", lambda *a: blocked_calls.append(1) or original(*a))
    torch.manual_seed(0)
    sdpa = BertModel(copy.deepcopy(CONFIG), add_pooling_layer=False)
    fast = use_fast_kernels(BertModel(copy.deepcopy(CONFIG), add_pooling_layer=False))
    fast.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and fast.config._attn_implementation == ATTENTION
    ids = torch.randint(2, 300, (3, 600))
    mask = torch.ones(3, 600, dtype=torch.long)
    mask[1, 450:] = 0
    mask[2, 10:] = 0
    real = mask.bool()
    truth_hidden, truth = _gradients(sdpa, ids, mask, bf16=False)
    fp32_hidden, fp32 = _gradients(fast, ids, mask, bf16=False)  # fp32 goes to SDPA: identical
    torch.testing.assert_close(fp32_hidden[real], truth_hidden[real], rtol=0, atol=0)
    sdpa_hidden, sdpa_grads = _gradients(sdpa, ids, mask, bf16=True)
    fast_hidden, fast_grads = _gradients(fast, ids, mask, bf16=True)
    assert len(blocked_calls) == CONFIG.num_hidden_layers  # bf16 on CPU took the blocked path
    sdpa_err = (sdpa_hidden[real] - truth_hidden[real]).abs().max()
    assert (fast_hidden[real] - truth_hidden[real]).abs().max() <= 2 * sdpa_err + 1e-3
    for name, want in truth.items():
        if name.endswith("key.bias"):
            continue  # mathematically zero (softmax ignores a shift): only rounding noise
        fast_err = (fast_grads[name] - want).norm() / want.norm()
        sdpa_err = (sdpa_grads[name] - want).norm() / want.norm()
        assert fast_err <= 2 * sdpa_err + 1e-3, name


def _cpu_has(flag):
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def test_native_is_built_where_the_cpu_runs_it():
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if _cpu_has("avx512_bf16") and _cpu_has("avx512dq") and shutil.which("cc") and headers:
        assert kernels.NATIVE, "the C extension stformer._native was not built: see the pip install log"


@pytest.mark.skipif(not kernels.NATIVE, reason="needs the C extension and a CPU with AVX512-BF16")
@pytest.mark.parametrize("n", [1, 15, 16, 17, 1100])
def test_native_rounds_the_exact_softmax_to_bf16(n):
    torch.manual_seed(n)
    scores = (torch.randn(3, 70, n) * torch.tensor([0.1, 4.0, 40.0])[:, None, None]).bfloat16()
    if n > 1:
        scores[0, 0, n // 2] = float("-inf")  # a masked score
    exact = torch.softmax(scores.double(), dim=-1)
    native = scores.clone()
    kernels.softmax_bf16_(native.data_ptr(), 3 * 70, n)
    assert native[0, 0, n // 2] == 0 or n == 1
    assert ((native.double() - exact).abs() <= exact * 2**-8 + 1e-37).all()  # within one bf16 step
    normal = exact > 1.2e-38  # below, the bf16 conversion flushes to zero and PyTorch keeps subnormals
    assert (native == torch.softmax(scores, dim=-1))[normal].float().mean() > 0.999  # rounded alike


@pytest.mark.skipif(not kernels.NATIVE, reason="needs the C extension and a CPU with AVX512-BF16")
@pytest.mark.parametrize("n", [1, 17, 1100])
def test_native_softmax_backward_rounds_the_exact_gradient_to_bf16(n):
    torch.manual_seed(n)
    probs = torch.softmax(torch.randn(4, 50, n) * 3, dim=-1).bfloat16()
    grad = torch.randn(4, 50, n).bfloat16()
    p, g = probs.double(), grad.double()
    exact = p * (g - (p * g).sum(-1, keepdim=True))
    native = grad.clone()
    kernels.softmax_backward_bf16_(native.data_ptr(), probs.data_ptr(), 4 * 50, n)
    torch.testing.assert_close(native.double(), exact, rtol=2**-8, atol=1e-6)
    assert (native == torch._softmax_backward_data(grad, probs, -1, torch.bfloat16)).float().mean() > 0.99


@pytest.mark.skipif(not kernels.NATIVE, reason="needs the C extension and a CPU with AVX512-BF16")
def test_native_does_not_depend_on_the_thread_count():
    scores = (torch.randn(64, 64, 1000) * 8).bfloat16()
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            out = scores.clone()
            kernels.softmax_bf16_(out.data_ptr(), 64 * 64, 1000)
            results.append(out)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    assert not torch.equal(results[0], scores)
    with pytest.raises(ValueError, match="n >= 1"):
        kernels.softmax_bf16_(scores.data_ptr(), 1, 0)


@pytest.mark.parametrize("case", ["left padding", "attention dropout", "fp32"])
def test_uncovered_cases_go_to_sdpa(monkeypatch, case):
    calls = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or ("sdpa", None))
    dtype = torch.float32 if case == "fp32" else torch.bfloat16
    q = k = v = torch.randn(2, 4, 8, 16, dtype=dtype)
    valid = torch.ones(2, 8, dtype=torch.bool)
    if case == "left padding":
        valid[1, :3] = False
    out, _ = stformer_attention(
        None, q, k, v, valid[:, None, None, :], dropout=0.1 if case == "attention dropout" else 0.0
    )
    assert out == "sdpa" and calls == [1]


def test_trainers_switch_their_models(tmp_path):
    from transformers import TrainingArguments

    from stformer.classify.trainer import ClassifierTrainer

    model = BertModel(copy.deepcopy(CONFIG))
    ClassifierTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True))
    assert model.config._attn_implementation == ATTENTION
    trainer = ClassifierTrainer(
        model_init=lambda: BertModel(copy.deepcopy(CONFIG)),
        args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True),
    )
    assert trainer.model.config._attn_implementation == ATTENTION


DROPOUT_PATHS = [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)]  # (dtype, native)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5])
@pytest.mark.parametrize(("dtype", "native"), DROPOUT_PATHS)
def test_dropout16_drops_at_rate_p_and_rescales(monkeypatch, p, dtype, native):
    if native and not kernels.NATIVE:
        pytest.skip("needs the C extension and a CPU with AVX512-BF16")
    monkeypatch.setattr(kernels, "NATIVE", native)
    torch.manual_seed(0)
    dropout = Dropout16(p)
    x = torch.full((1000, 1001), 3.0, dtype=dtype, requires_grad=True)  # odd size: not a multiple of 4 or 32
    y = dropout(x)
    kept = y != 0
    n = x.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    scaled = torch.tensor(3.0, dtype=dtype) * (1 / (1 - p))  # PyTorch's rounding of the kept values
    assert (y[kept] == scaled).all()
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) * (1 / (1 - p)))
    assert dropout.eval()(x) is x


@pytest.mark.skipif(not kernels.NATIVE, reason="needs the C extension and a CPU with AVX512-BF16")
def test_native_dropout_masks_are_independent_and_seeded():
    x = torch.ones(64, 4099, dtype=torch.bfloat16)
    torch.manual_seed(1)
    first = Dropout16(0.5)(x) == 0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(1)
        again = Dropout16(0.5)(x) == 0
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, again)  # the seed alone decides, not the thread count
    assert not torch.equal(first, Dropout16(0.5)(x) == 0)  # the next call draws anew
    flat = first.flatten()
    for lag in (1, 4, 16, 32, 4099):  # within a draw, within a block, across blocks and rows
        both = (flat[:-lag] & flat[lag:]).float().mean().item()
        assert abs(both - 0.25) < 5 * (0.25 * 0.75 / len(flat)) ** 0.5, lag


def test_use_fast_kernels_swaps_dropout_only():
    config = copy.deepcopy(CONFIG)
    config.hidden_dropout_prob = 0.1
    model = BertModel(config).eval()
    before = [name for name, m in model.named_modules() if type(m) is torch.nn.Dropout]
    use_fast_kernels(model)
    after = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert before and sorted(after) == sorted(before)
    assert all(type(m) is Dropout16 and m.p in (0.0, 0.1) and not m.training for m in after.values())
    assert after["embeddings.dropout"].p == 0.1


def test_use_fast_kernels_is_reversible_and_keeps_the_weights():
    torch.manual_seed(0)
    model = BertModel(copy.deepcopy(CONFIG)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(2, 300, (2, 20))
    expected = model(input_ids=ids).last_hidden_state
    use_fast_kernels(model)
    assert type(model) is BertModelInPasses and model.config._attn_implementation == ATTENTION
    use_fast_kernels(model, enabled=False)
    assert type(model) is BertModel and model.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, Dropout16) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(input_ids=ids).last_hidden_state, expected)


@pytest.mark.parametrize(
    "model_class",
    [BertForMaskedGenes, BertForCellClassification, "BertForSequenceClassification", "BertForTokenClassification"],
)
def test_batches_encoded_in_passes_of_fewer_cells_give_the_same_outputs_and_gradients(monkeypatch, model_class):
    """Passes of fewer cells, each cut to its longest cell: the same results at real positions, zeros at padding."""
    model_class = getattr(transformers, model_class) if isinstance(model_class, str) else model_class
    torch.manual_seed(0)
    model = use_fast_kernels(model_class(copy.deepcopy(CONFIG)))
    shapes = []
    model.bert.embeddings.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape[:2])))
    mask = torch.ones(5, 10, dtype=torch.long)
    mask[2:, 7:] = 0
    ids = torch.randint(2, 300, (5, 10)) * mask
    labels = {
        BertForMaskedGenes: torch.where(torch.rand(5, 10) < 0.3, ids, -100).masked_fill(mask == 0, -100),
        BertForCellClassification: torch.tensor([0, 1, 1, 0, 1]),
        transformers.BertForSequenceClassification: torch.tensor([0, 1, 1, 0, 1]),
        transformers.BertForTokenClassification: torch.randint(0, 2, (5, 10)).masked_fill(mask == 0, -100),
    }[model_class]
    labels[0] = -100 if labels.dim() == 2 else labels[0]  # a pass may hold no labelled gene

    def run():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            layers = model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        return out, grads, layers

    whole, whole_grads, whole_layers = run()
    assert shapes == [(5, 10)] * 2
    monkeypatch.setattr(passes, "FORWARD_TOKENS", 20)  # two cells of width 10 per pass
    shapes.clear()
    chunked, chunked_grads, chunked_layers = run()
    assert shapes == [(2, 10), (2, 7), (1, 7)] * 2  # (cells, width) of each pass
    torch.testing.assert_close(chunked.loss, whole.loss)
    for key in ("logits", "predicted"):
        if key in whole:
            real = mask.bool() if whole[key].dim() == 3 else slice(None)  # token logits: real positions
            torch.testing.assert_close(chunked[key][real], whole[key][real])
    assert len(whole_layers) == CONFIG.num_hidden_layers + 1
    for got, want in zip(chunked_layers, whole_layers, strict=True):
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()])
        assert not got[~mask.bool()].any()
    assert chunked_grads.keys() == whole_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, msg=name)


def test_a_batch_padded_past_its_longest_cell_is_cut_and_left_padding_is_not():
    torch.manual_seed(0)
    model = use_fast_kernels(BertModel(copy.deepcopy(CONFIG))).eval()
    widths = []
    model.embeddings.register_forward_hook(lambda module, args, out: widths.append(out.shape[1]))
    ids = torch.randint(2, 300, (3, 10))
    right = torch.zeros(3, 10, dtype=torch.long)
    right[:, :6] = 1
    right[2, 4:] = 0
    with torch.no_grad():
        cut = model(input_ids=ids, attention_mask=right).last_hidden_state
        alone = model(input_ids=ids[:, :6], attention_mask=right[:, :6]).last_hidden_state
        assert widths == [6, 6]
        torch.testing.assert_close(cut[:, :6][right[:, :6].bool()], alone[right[:, :6].bool()])
        assert cut.shape == (3, 10, CONFIG.hidden_size) and not cut[:, 6:].any()
        widths.clear()
        left = right.flip(1)
        model(input_ids=ids, attention_mask=left)
        assert widths == [10]  # not a prefix: the whole width


def test_bf16_is_not_fast_when_pytorch_is_capped_at_avx2():
    """ATEN_CPU_CAPABILITY=avx2 (an AVX2-only CPU, or the benchmarks standing in for one): fp32 on CPU."""
    code = "from stformer._hardware import bf16_is_fast; print(bf16_is_fast('cpu'))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
