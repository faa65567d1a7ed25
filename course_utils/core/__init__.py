"""``course_utils.core``: The base layer: what every notebook and track needs, and nothing about distillation.

Modules:

- ``profiles``    – ``select()``: the ``small`` (offline CPU) or ``gpu`` (Colab/hub) profile
- ``environment`` – ``setup()``: offline variables, seeds, quiet logging, device choice
- ``assets``      – fetch and locate the offline weights and data that ship inside registry packages
- ``cache``       – trained models and computed results under the course cache, keyed by the fingerprint of their recipe; one atomic save
- ``hf``          – ``transformers`` helpers: quiet loading, a classifier's logits over a tokenised dataset, embedding rows
- ``claims``      – ``claim()``: a results claim, asserted (reported, not asserted, in the gpu profile's smoke run)
"""

__all__ = ['profiles', 'environment', 'assets', 'cache', 'hf', 'claims']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
