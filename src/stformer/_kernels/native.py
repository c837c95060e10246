"""The optional C extension (``_native.c``): bf16 softmax, its backward pass and dropout on CPU.

``NATIVE`` is True where the package was built with a C compiler and the CPU has AVX512-BF16;
elsewhere PyTorch's operations run instead.
"""

try:  # imported after torch, so that it shares torch's OpenMP threads
    import torch  # noqa: F401

    from .._native import AVX512_BF16 as NATIVE
    from .._native import dropout_bf16, softmax_backward_bf16_, softmax_bf16_
except ImportError:  # installed without a C compiler: PyTorch's softmax and dropout
    NATIVE = False
    dropout_bf16 = softmax_backward_bf16_ = softmax_bf16_ = None

__all__ = ["NATIVE", "dropout_bf16", "softmax_backward_bf16_", "softmax_bf16_"]
