"""``course_utils.vision``: The image track (notebooks 01, 02, 04's CNNs, 07). Never imports ``text`` or ``llm``.

Modules:

- ``digits``        – scikit-learn digits as tensors, MLPs
- ``fashion_mnist`` – Fashion-MNIST from the offline asset, small CNNs with feature maps
- ``strategies``    – born-again, teacher-assistant chains, mutual learning, data-free distillation
"""

__all__ = ['digits', 'fashion_mnist', 'strategies']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
