from collections import OrderedDict

from robustbench.model_zoo.architectures.nets import (
    DMWideResNet,
    Ensemble,
    PreActResNet,
    TimmLike,
    WideResNet,
    normalize_model,
)
from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

linf = OrderedDict([
    ("Carmon2019Unlabeled", {"model": lambda: WideResNet(), "gdrive_id": "1"}),
    ("Gowal2020Uncovering_28_10_extra", {"model": lambda: DMWideResNet(), "gdrive_id": "2"}),
    ("Rice2020Overfitting", {"model": lambda: PreActResNet(), "gdrive_id": "3"}),
    ("Timm2023Backed", {"model": lambda: normalize_model(TimmLike(), (0.5,) * 3, (0.25,) * 3),
                        "gdrive_id": "4"}),
    ("Chen2020Adversarial", {"model": Ensemble, "gdrive_id": ["5", "6"]}),
])
l2 = OrderedDict([
    ("Rice2020Overfitting", {"model": lambda: PreActResNet(), "gdrive_id": "7"}),
])
cifar_10_models = OrderedDict([(ThreatModel.Linf, linf), (ThreatModel.L2, l2)])

model_dicts = OrderedDict([(BenchmarkDataset.cifar_10, cifar_10_models)])
