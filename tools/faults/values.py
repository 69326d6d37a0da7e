"""Faults in values: hyper-parameters and data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tools.faults.harness import Case, fault
from tools.faults.setups import (
    Trigger,
    digits,
    fashion_args,
    fashion_dir,
    kd,
    labelled,
    loaders,
    recipe,
    student_net,
    teacher_net,
    trainer,
)


# -- hyper-parameters -------------------------------------------------------------------------------------------
@fault("hyper-parameter", r"temperature must be a finite number > 0, got nan", bad=("temperature", "nan"))
def temperature_nan(c: Case) -> Trigger:
    """DistillationModule(temperature=nan)"""
    return lambda: kd(temperature=float("nan"))


@fault("hyper-parameter", r"temperature must be a finite number > 0, got inf", bad=("temperature", "inf"))
def temperature_inf_cli(c: Case) -> Trigger:
    """`--model.init_args.temperature=.inf` on the command line"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.temperature=.inf")


@fault("hyper-parameter", r"temperature must be a finite number > 0, got -?0", bad=("temperature",))
def temperature_zero(c: Case) -> Trigger:
    """DistillationModule(temperature=0)"""
    return lambda: kd(temperature=0.0)


@fault(
    "hyper-parameter",
    r"KDLoss has no argument 'temperature'.*distillation module's own setting: set model\.init_args\.temperature",
    bad=("temperature",),
)
def temperature_twice(c: Case) -> Trigger:
    """`--model.init_args.distill_loss.init_args.temperature=4`: T set on the loss as well as on the module"""
    args = recipe(c)
    loss = "--model.init_args.distill_loss={class_path: lightning_kd.losses.KDLoss, init_args: {temperature: 4.0}}"
    return lambda: c.cli("fit", *args, loss)


@fault(
    "hyper-parameter",
    r"alpha must be in \[0, 1\].*got 1\.5; set it between 0 .* e\.g\. alpha=0\.9",
    bad=("alpha", "1.5"),
)
def alpha_out_of_range(c: Case) -> Trigger:
    """`--model.init_args.alpha=1.5`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.alpha=1.5")


@fault("hyper-parameter", r"weight must be a finite number >= 0, got nan", bad=("weight", "nan"))
def feature_term_weight_nan(c: Case) -> Trigger:
    """FeatureTerm(weight=nan)"""
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import FitNetLoss

    return lambda: FeatureTerm("hint", FitNetLoss(), ["features.1"], ["fc"], weight=float("nan"))


@fault("hyper-parameter", r"weight must be a finite number >= 0, got inf", bad=("weight", "inf"))
def feature_term_weight_inf(c: Case) -> Trigger:
    """FeatureTerm(weight=inf)"""
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import ATLoss

    return lambda: FeatureTerm("at", ATLoss(), ["features.1"], ["block1"], weight=float("inf"))


@fault("hyper-parameter", r"term name 'kd' must be a Python identifier other than", bad=("'kd'",))
def feature_term_reserved_name(c: Case) -> Trigger:
    """FeatureTerm named 'kd' (the logit term's name)"""
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import ATLoss

    return lambda: FeatureTerm("kd", ATLoss(), ["features.1"], ["block1"])


@fault("hyper-parameter", r"no submodule 'features\.9'; closest:", bad=("features.9",))
def feature_term_unknown_layer(c: Case) -> Trigger:
    """a FeatureTerm naming a student layer that does not exist"""
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import FitNetLoss

    return lambda: kd(feature_terms=[FeatureTerm("hint", FitNetLoss(), ["features.9"], ["block2"])])


@fault("hyper-parameter", r"feature term 'hint' cannot run on these features.*connector", bad=("block2", "hint"))
def feature_term_shapes_differ(c: Case) -> Trigger:
    """FitNets between layers of different widths, without a connector"""
    from lightning_kd import DistillationModule, FeatureTerm
    from lightning_kd.losses import FitNetLoss
    from lightning_kd.models import SmallCNN

    term = FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"])
    module = DistillationModule(teacher_net(), SmallCNN(1, 10, widths=(4, 4, 4)), feature_terms=[term])
    return lambda: trainer().fit(module, digits())


@fault(
    "hyper-parameter",
    r"num_classes=5 but the student predicts 10 classes",
    bad=("num_classes=5", "num_classes"),
)
def num_classes_disagrees(c: Case) -> Trigger:
    """`--model.init_args.num_classes=5` with 10-class models"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.num_classes=5")


@fault("hyper-parameter", r"teacher predicts 10 classes but student predicts 7", bad=("7", "num_classes"))
def teacher_and_student_classes_differ(c: Case) -> Trigger:
    """a 7-class student for a 10-class teacher"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.student.init_args.num_classes=7")


@fault(
    "hyper-parameter",
    r"label_smoothing must be in \[0, 1\), got 1\.0; use a value below 1",
    bad=("label_smoothing",),
)
def label_smoothing_one(c: Case) -> Trigger:
    """ClassificationModule(label_smoothing=1.0)"""
    from lightning_kd import ClassificationModule

    return lambda: ClassificationModule(student_net(), label_smoothing=1.0)


@fault(
    "hyper-parameter",
    r"scheduler_interval must be 'auto', 'step' or 'epoch', got 'batch'; use 'step' to step the scheduler after",
    bad=("scheduler_interval", "batch"),
)
def scheduler_interval_unknown(c: Case) -> Trigger:
    """scheduler_interval='batch'"""
    return lambda: kd(scheduler_interval="batch")


@fault(
    "hyper-parameter",
    r"temperatures must be finite numbers > 0, got start=nan, end=1\.0; give both > 0, e\.g\. start=4\.0",
    bad=("start=nan", "temperature"),
)
def temperature_schedule_nan(c: Case) -> Trigger:
    """TemperatureScheduler(start=nan)"""
    from lightning_kd.callbacks import TemperatureScheduler

    return lambda: TemperatureScheduler(start=float("nan"), end=1.0)


@fault(
    "hyper-parameter",
    r"no feature term named 'hnit'; the module has \['hint'\]: did you mean term='hint'\? set term to one",
    bad=("hnit",),
)
def loss_weight_schedule_unknown_term(c: Case) -> Trigger:
    """LossWeightScheduler(term='hnit') on a module whose term is 'hint'"""
    from lightning_kd import FeatureTerm
    from lightning_kd.callbacks import LossWeightScheduler
    from lightning_kd.losses import FitNetLoss

    module = kd(feature_terms=[FeatureTerm("hint", FitNetLoss(), [""], [""])])
    callback = LossWeightScheduler("linear", start=1.0, end=0.0, term="hnit")
    return lambda: trainer(callbacks=[callback]).fit(module, digits())


@fault("hyper-parameter", r"batch_size must be a whole number >= 1, got 0; e\.g\.", bad=("batch_size",))
def batch_size_zero_cli(c: Case) -> Trigger:
    """`--data.init_args.batch_size=0`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--data.init_args.batch_size=0")


# -- data -------------------------------------------------------------------------------------------------------
def _label(value: int) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def change(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.clone()
        y[5] = value
        return x, y

    return change


@fault("data", r"labels of the train split .* range from 0 to 10.*out of range: \[10\]", bad=("10", "label"))
def label_ge_num_classes(c: Case) -> Trigger:
    """a label 10 in a 10-class data set"""
    return lambda: trainer().fit(kd(), labelled(_label(10)))


@fault("data", r"range from -1 to 9.*out of range: \[-1\]", bad=("-1",))
def label_negative(c: Case) -> Trigger:
    """a label -1"""
    return lambda: trainer().fit(kd(), labelled(_label(-1)))


@fault(
    "data",
    r"labels of the train split of Labelled are torch\.float32 of shape \(64, 10\) \(they look one-hot.*each "
    r"summing to 1\).*labels\.argmax\(1\)\.long\(\)",
    bad=("(64, 10)", "labels"),
)
def one_hot_labels_in_memory(c: Case) -> Trigger:
    """one-hot float labels from an in-memory data module"""
    return lambda: trainer().fit(kd(), labelled(lambda x, y: (x, torch.nn.functional.one_hot(y, 10).float())))


@fault("data", r"look one-hot or soft.*labels\.argmax\(1\)\.long\(\)", bad=("float32", "one-hot"))
def one_hot_labels_in_a_dataloader(c: Case) -> Trigger:
    """one-hot float labels from a plain DataLoader"""
    x = torch.rand(64, 1, 8, 8)
    train, val = loaders(x, torch.nn.functional.one_hot(torch.arange(64) % 10, 10).float())
    return lambda: trainer().fit(kd(), train, val)


@fault(
    "data",
    r"labels of the train split of Labelled are not whole numbers: 64 of 64 .*\(e\.g\. \[0\.5, 1\.5.*Give integer "
    r"class indices",
    bad=("label", "2.5"),
)
def fractional_labels(c: Case) -> Trigger:
    """fractional float labels (2.5) from an in-memory data module"""
    from lightning_kd import ClassificationModule

    return lambda: trainer().fit(ClassificationModule(student_net()), labelled(lambda x, y: (x, y.float() + 0.5)))


@fault(
    "data",
    r"labels of the first validation batch range from 0 to 12.*out of range: \[12\]\. Fix the label mapping",
    bad=("12",),
)
def label_out_of_range_in_a_dataloader(c: Case) -> Trigger:
    """a label 12 from plain DataLoaders (not a LightningDataModule)"""
    y = torch.arange(64) % 10
    y[7] = 12
    train, val = loaders(torch.rand(64, 1, 8, 8), y)
    return lambda: trainer().fit(kd(), train, val)


@fault(
    "data",
    r"teacher \(SmallCNN\) cannot take inputs of shape \(64, 1, 8, 8\).*expects \(N, 3, H, W\)",
    bad=("in_channels=3", "3, H, W"),
)
def wrong_input_channels(c: Case) -> Trigger:
    """a 3-channel teacher on 1-channel digits"""
    args = recipe(c)
    return lambda: c.cli(
        "fit", *args, "--model.init_args.teacher.init_args.in_channels=3", "--model.init_args.teacher_ckpt=null"
    )


@fault("data", r"student \(MLP\) cannot take inputs .*flatten to 784", bad=("784",))
def wrong_feature_size(c: Case) -> Trigger:
    """an MLP student built for 784 features on 64-pixel digits"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--model.init_args.student.init_args.in_features=784")


@fault(
    "data",
    r"inputs of the train split of Labelled hold 1 NaN or infinite value \(in 1 sample, e\.g\. index \[3\]\).*Clean "
    r"the data",
    bad=("input", "data"),
)
def nan_in_inputs(c: Case) -> Trigger:
    """a NaN pixel in the training images"""

    def change(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x[3, 0, 2, 2] = float("nan")
        return x, y

    return lambda: trainer().fit(kd(), labelled(change))


@fault(
    "data",
    r"inputs of the first validation batch hold 1 NaN or infinite value \(in 1 sample, e\.g\. index \[3\]\).*Clean",
    bad=("input", "data"),
)
def nan_in_inputs_of_a_dataloader(c: Case) -> Trigger:
    """a NaN pixel in the images of plain DataLoaders (checked on the first batch of each stage)"""
    x = torch.rand(64, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    train, val = loaders(x, torch.arange(64) % 10)
    return lambda: trainer().fit(kd(), train, val)


@fault("data", r"val_fraction=0\.001 gives 2 validation samples.*use val_fraction >= ", bad=("val_fraction",))
def val_fraction_too_small(c: Case) -> Trigger:
    """`--data.init_args.val_fraction=0.001`"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--data.init_args.val_fraction=0.001")


@fault("data", r"sum to 1, leaving nothing to train on", bad=("val_fraction", "test_fraction"))
def split_fractions_sum_to_one(c: Case) -> Trigger:
    """val_fraction 0.5 + test_fraction 0.5"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--data.init_args.val_fraction=0.5", "--data.init_args.test_fraction=0.5")


@fault("data", r"augment_seed=1 .*set with_indices=True", bad=("augment_seed", "with_indices"))
def augment_seed_without_indices(c: Case) -> Trigger:
    """DigitsDataModule(augment_seed=1) without with_indices"""
    return lambda: digits(augment=True, augment_seed=1)


@fault(
    "data",
    r"val_size must be in \[0, 60000\), got 60000; use a val_size below 60000",
    bad=("val_size",),
)
def fashion_val_size_too_large(c: Case) -> Trigger:
    """Fashion-MNIST `--data.init_args.val_size=60000`"""
    args = fashion_args(fashion_dir(c))
    return lambda: c.cli("fit", *args, "--data.init_args.val_size=60000")


@fault(
    "hyper-parameter",
    r"temperature=1e\+06 is above 20: the softened teacher and student distributions are close to uniform",
    bad=("temperature", "1e+06"),
)
def temperature_huge(c: Case) -> Trigger:
    """`--model.init_args.temperature=1e6` (fp32 cancellation once made the KD loss negative)"""
    args = recipe(c)

    def trigger() -> Any:
        out = c.cli("fit", *args, "--model.init_args.temperature=1e6")
        return c.said(out, r"temperature=1e\+06 is above")

    return trigger


@fault(
    "hyper-parameter",
    r"temperature=1e-06 is below 0\.25: the softened distributions are close to one-hot .* close to plain",
    bad=("temperature", "1e-06"),
)
def temperature_tiny(c: Case) -> Trigger:
    """`--model.init_args.temperature=1e-6` (the KD term ~1e-7: a plain CE run labelled KD)"""
    args = recipe(c)

    def trigger() -> Any:
        out = c.cli("fit", *args, "--model.init_args.temperature=1e-6")
        return c.said(out, r"temperature=1e-06 is below")

    return trigger


@fault(
    "hyper-parameter",
    r"trainer\.gradient_clip_val=-1 is negative .* Set a positive bound, e\.g\. gradient_clip_val: 1\.0",
    bad=("gradient_clip_val", "-1"),
)
def gradient_clip_negative(c: Case) -> Trigger:
    """`--trainer.gradient_clip_val=-1` (Lightning ignored it: an unclipped run)"""
    args = recipe(c)
    return lambda: c.cli("fit", *args, "--trainer.gradient_clip_val=-1")
