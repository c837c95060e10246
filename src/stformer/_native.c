/* Native CPU kernels for stformer's attention (see _kernels.py).
 *
 * softmax_bf16_(address, rows, n): softmax over each row of a contiguous (rows, n) bf16 buffer, in
 * place. Per row: the maximum, exp(x - max) into an fp32 row buffer with its sum, then the
 * normalized values rounded to bf16 (round to nearest even), as PyTorch's bf16 softmax computes
 * them; about three times faster because exp is a degree-5 polynomial in 2^f (relative error
 * 2.4e-6, far below bf16's 3.9e-3) instead of a libm-accurate one; values below the fp32 normal
 * range (1.2e-38) become 0 where PyTorch keeps bf16 subnormals. Rows are split over OpenMP
 * threads: imported after torch, this module binds to torch's libgomp, so it uses torch's
 * thread pool and thread count instead of a second pool competing for the same cores.
 *
 * softmax_backward_bf16_(grad, probs, rows, n): the gradient of the scores from that of the
 * probabilities, in place, in fp32 arithmetic rounded to bf16, as PyTorch's bf16 softmax backward.
 *
 * dropout_bf16(...): dropout of a contiguous bf16 buffer in one pass, its keep mask drawn from a
 * counter-based SplitMix64 stream (four 16-bit draws per output), so that the result depends on
 * the seed only, not on the thread count; the kept values are x * scale rounded to bf16 as
 * PyTorch rounds them. The same call on the gradient with the same seed is the backward pass, so
 * no mask is stored. About thirty times faster than drawing the mask with torch.randint.
 *
 * AVX512_BF16 is true when the CPU runs the kernels (AVX512F, BW, VL, DQ and BF16); elsewhere the
 * module imports but the kernels raise, and callers use PyTorch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KERNELS 1
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

/* 16 bf16 values as fp32 (exact: bf16 is the top half of fp32). */
TARGET static inline __m512 widen_bf16(__m256i bits) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

TARGET static inline __m512 load_bf16(const uint16_t *p, __mmask16 valid) {
    return widen_bf16(_mm256_maskz_loadu_epi16(valid, p));
}

/* exp(x) = 2^n * 2^f with n = round(x log2 e), f in [-1/2, 1/2]; -inf and below -150 give 0. */
TARGET static inline __m512 exp_ps(__m512 x) {
    __m512 t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.3333558146428443e-3f); /* (ln 2)^k / k!, k = 5 .. 0 */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 lanes(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

TARGET static void softmax_row(uint16_t *x, int64_t n, float *buffer) {
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 valid = lanes(n - j);
        top = _mm512_mask_max_ps(top, valid, top, load_bf16(x + j, valid));
    }
    __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 valid = lanes(n - j);
        __m512 e = exp_ps(_mm512_sub_ps(load_bf16(x + j, valid), shift));
        _mm512_mask_storeu_ps(buffer + j, valid, e);
        sum = _mm512_mask_add_ps(sum, valid, sum, e);
    }
    __m512 scale = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 valid = lanes(n - j);
        __m256bh y = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(valid, buffer + j), scale));
        _mm256_mask_storeu_epi16(x + j, valid, (__m256i)y);
    }
}

/* grad <- probs * (grad - sum(probs * grad)) per row: the gradient of the scores, in place. */
TARGET static void softmax_backward_rows(uint16_t *grad, const uint16_t *probs, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n >= 65536)
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *g = grad + r * n;
        const uint16_t *p = probs + r * n;
        __m512 dot = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            __mmask16 valid = lanes(n - j);
            dot = _mm512_fmadd_ps(load_bf16(p + j, valid), load_bf16(g + j, valid), dot);
        }
        __m512 shift = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
        for (int64_t j = 0; j < n; j += 16) {
            __mmask16 valid = lanes(n - j);
            __m512 y = _mm512_mul_ps(load_bf16(p + j, valid), _mm512_sub_ps(load_bf16(g + j, valid), shift));
            _mm256_mask_storeu_epi16(g + j, valid, (__m256i)_mm512_cvtneps_pbh(y));
        }
    }
}

/* SplitMix64 outputs number counter + lane (lanes 0-7) of the stream that starts at seed. */
TARGET static inline __m512i splitmix64(uint64_t seed, uint64_t counter) {
    const __m512i gamma = _mm512_set1_epi64((long long)0x9E3779B97F4A7C15ULL);
    __m512i z = _mm512_add_epi64(_mm512_set1_epi64((long long)counter), _mm512_set_epi64(8, 7, 6, 5, 4, 3, 2, 1));
    z = _mm512_add_epi64(_mm512_set1_epi64((long long)seed), _mm512_mullo_epi64(z, gamma));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ULL));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64((long long)0x94D049BB133111EBULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

/* Per block of 32 elements, 32 16-bit draws (8 SplitMix64 outputs): kept where draw >= threshold. */
TARGET static void dropout_blocks(const uint16_t *x, uint16_t *out, int64_t count, uint16_t threshold, float scale,
                                  uint64_t seed) {
    int64_t blocks = (count + 31) / 32;
#pragma omp parallel for schedule(static) if (count >= 65536)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t start = b * 32, left = count - start;
        __mmask32 valid = left >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
        __m512i draws = splitmix64(seed, (uint64_t)b * 8);
        __mmask32 keep = _mm512_cmpge_epu16_mask(draws, _mm512_set1_epi16((short)threshold)) & valid;
        __m512i bits = _mm512_maskz_loadu_epi16(valid, x + start);
        __m512 low = _mm512_mul_ps(widen_bf16(_mm512_castsi512_si256(bits)), _mm512_set1_ps(scale));
        __m512 high = _mm512_mul_ps(widen_bf16(_mm512_extracti64x4_epi64(bits, 1)), _mm512_set1_ps(scale));
        __m512bh y = _mm512_cvtne2ps_pbh(high, low);
        _mm512_mask_storeu_epi16(out + start, valid, _mm512_maskz_mov_epi16(keep, (__m512i)y));
    }
}

/* 0 on success, 1 when a thread's row buffer could not be allocated. */
TARGET static int softmax_rows(uint16_t *data, int64_t rows, int64_t n) {
    int failed = 0;
#pragma omp parallel if (rows * n >= 65536) reduction(| : failed)
    {
        float *buffer = malloc((size_t)n * sizeof(float));
        failed = buffer == NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            if (buffer) softmax_row(data + r * n, n, buffer);
        free(buffer);
    }
    return failed;
}
#endif

static int kernels_run; /* cpu_runs_kernels(), set once when the module is imported */

static int cpu_runs_kernels(void) {
#ifdef KERNELS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

/* 1 when a kernel can run on (rows, n) buffers; else 0, with the Python exception set. */
static int usable(const char *kernel, long long rows, long long n) {
    if (!kernels_run) {
        PyErr_Format(PyExc_RuntimeError, "%s needs a CPU with AVX512-BF16 (see AVX512_BF16)", kernel);
        return 0;
    }
    if (rows < 0 || n < 1) {
        PyErr_Format(PyExc_ValueError, "%s needs rows >= 0 and n >= 1, got rows=%lld, n=%lld", kernel, rows, n);
        return 0;
    }
    return 1;
}

static PyObject *softmax_bf16_(PyObject *self, PyObject *args) {
    unsigned long long address;
    long long rows, n;
    if (!PyArg_ParseTuple(args, "KLL", &address, &rows, &n) || !usable("softmax_bf16_", rows, n)) return NULL;
    int failed = 0;
#ifdef KERNELS
    Py_BEGIN_ALLOW_THREADS failed = softmax_rows((uint16_t *)(uintptr_t)address, rows, n);
    Py_END_ALLOW_THREADS
#endif
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *softmax_backward_bf16_(PyObject *self, PyObject *args) {
    unsigned long long grad, probs;
    long long rows, n;
    if (!PyArg_ParseTuple(args, "KKLL", &grad, &probs, &rows, &n) || !usable("softmax_backward_bf16_", rows, n))
        return NULL;
#ifdef KERNELS
    Py_BEGIN_ALLOW_THREADS softmax_backward_rows((uint16_t *)(uintptr_t)grad, (const uint16_t *)(uintptr_t)probs, rows, n);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

static PyObject *dropout_bf16(PyObject *self, PyObject *args) {
    unsigned long long x, out, seed;
    long long count;
    unsigned int threshold;
    float scale;
    if (!PyArg_ParseTuple(args, "KKLIfK", &x, &out, &count, &threshold, &scale, &seed) ||
        !usable("dropout_bf16", count, 1))
        return NULL;
    if (threshold > 65535) {
        PyErr_Format(PyExc_ValueError, "dropout_bf16 needs threshold <= 65535, got %u", threshold);
        return NULL;
    }
#ifdef KERNELS
    Py_BEGIN_ALLOW_THREADS dropout_blocks((const uint16_t *)(uintptr_t)x, (uint16_t *)(uintptr_t)out, count,
                                          (uint16_t)threshold, scale, seed);
    Py_END_ALLOW_THREADS
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"softmax_backward_bf16_", softmax_backward_bf16_, METH_VARARGS,
     "softmax_backward_bf16_(grad, probs, rows, n): grad <- probs * (grad - rowsum(probs * grad)) over contiguous "
     "(rows, n) bf16 buffers, in place (fp32 arithmetic)."},
    {"dropout_bf16", dropout_bf16, METH_VARARGS,
     "dropout_bf16(x, out, count, threshold, scale, seed): for count contiguous bf16 values at address x, "
     "out = x * scale where the 16-bit draw of SplitMix64(seed) at that position is >= threshold, else 0."},
    {"softmax_bf16_", softmax_bf16_, METH_VARARGS,
     "softmax_bf16_(address, rows, n): softmax over each row of a contiguous (rows, n) bf16 buffer, in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "stformer's native CPU kernels.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddObject(m, "AVX512_BF16", PyBool_FromLong(kernels_run = cpu_runs_kernels())) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
