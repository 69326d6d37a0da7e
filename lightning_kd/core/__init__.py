"""Pure-torch components every distillation module is built from (no Lightning imported here):

- :mod:`~lightning_kd.core.teacher`: :class:`Teacher`, :class:`TeacherEnsemble`, :class:`TeacherOutput`;
- :mod:`~lightning_kd.core.batch`: :class:`Batch` and :func:`unpack_batch`;
- :mod:`~lightning_kd.core.feature_terms`: :class:`FeatureTerms`, built from :class:`FeatureTerm` s
  (:mod:`~lightning_kd.core.feature_term`), :class:`FeatureCapture` hooks (:mod:`~lightning_kd.core.features`) and
  connectors (:mod:`~lightning_kd.core.connectors`);
- :mod:`~lightning_kd.core.weights`: loading a model's weights from checkpoints and ``state_dict`` files;
- :mod:`~lightning_kd.core.schedules`: schedules as pure functions of ``(step, total_steps)``.
"""

from types import ModuleType as _ModuleType

from lightning_kd.core.batch import Batch, unpack_batch
from lightning_kd.core.connectors import Connector, build_connector
from lightning_kd.core.feature_term import FeatureTerm
from lightning_kd.core.feature_terms import FeatureTerms
from lightning_kd.core.features import FeatureCapture, resolve_module
from lightning_kd.core.model_info import count_parameters, infer_num_classes
from lightning_kd.core.teacher import Teacher, TeacherBase, TeacherEnsemble, TeacherOutput, output_logits
from lightning_kd.core.weights import load_weights

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
