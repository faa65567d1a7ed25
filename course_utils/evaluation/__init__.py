"""``course_utils.evaluation``: Measuring a distilled model: above ``core`` and ``kd``, below every training module.

Modules:

- ``metrics``      – accuracy, F1, agreement, KL to the teacher, probabilities
- ``calibration``  – reliability bins, ECE, ECE differences with intervals, reliability diagrams
- ``stats``        – paired bootstrap, accuracy differences with intervals
- ``speed``        – latency benchmarks done right, speed-ups
- ``size``         – parameter counts, weights in memory, size on disk, inference memory, int8 quantization
- ``peak_memory``  – peak memory of a function on GPU and CPU; the KD losses' memory compared
- ``text_metrics`` – ROUGE-L and exact match for generated text
- ``harness``      – notebook 06's table of classifiers with intervals, the Pareto front, the saved summary
"""

__all__ = ['metrics', 'calibration', 'stats', 'speed', 'size', 'peak_memory', 'text_metrics', 'harness']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
