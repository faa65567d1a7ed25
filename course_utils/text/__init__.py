"""``course_utils.text``: The BERT track (notebooks 03, 04, 06). Never imports ``vision`` or ``llm``; ``recipes`` sits on top.

Modules:

- ``sentiment``       – the movie-review sentiment ``DatasetDict`` (train / validation / test / unlabelled transfer)
- ``bert``            – BERT recipes per profile, DistilBERT-style layer-copy initialisation, freezing embeddings
- ``feature_trainer`` – ``FeatureDistillationTrainer`` (hidden-state and attention terms), narrow students, CKA of models
- ``recipes``         – cache-or-train: notebook 03's teacher and students, notebook 04's feature students
"""

__all__ = ['sentiment', 'bert', 'feature_trainer', 'recipes']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
