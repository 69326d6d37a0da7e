"""From a distilled checkpoint to an edge-ready student: teacher-vs-student report and verified exports.

Pure core on plain ``nn.Module``\\ s and data (no Lightning): :func:`compare_models` + :func:`write_report`
measure and write the comparison; :func:`export_student` writes ONNX (fp32/fp16/int8) and ``.pt2`` files,
each verified against the eager student, with a ``deploy.json`` sidecar. onnx/onnxruntime
(``lightning-kd[export]``) and matplotlib (``lightning-kd[plots]``) are imported only when needed.

Example:
    >>> result = compare_models(teacher, student, dm.test_dataloader(), class_names=names)  # doctest: +SKIP
    >>> result["exports"] = export_student(student, dm.test_dataloader(), "out/export")  # doctest: +SKIP
    >>> write_report(result, "out/report")  # doctest: +SKIP
"""

from types import ModuleType as _ModuleType

from lightning_kd.core.model_info import count_parameters
from lightning_kd.report._extras import MissingExtraError
from lightning_kd.report.compare import compare_models, write_report
from lightning_kd.report.cost import file_size, flops_per_sample, measure_latency
from lightning_kd.report.deploy import export_student
from lightning_kd.report.export import (
    ExportMismatchError,
    convert_onnx_fp16,
    export_onnx,
    export_pt2,
    quantize_onnx_int8,
    verify_onnx,
    verify_pt2,
)
from lightning_kd.report.metrics import (
    accuracy,
    classification_summary,
    collect_logits,
    collect_pair,
    confusion_matrix,
    expected_calibration_error,
    kl_teacher_student,
    per_class_accuracy,
    reliability_bins,
    top1_agreement,
)
from lightning_kd.report.plots import plot_confusion_matrices, plot_per_class_accuracy, plot_reliability, write_plots

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
