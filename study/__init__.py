"""Studies: many models under one protocol, one dataset, one comparison (docs/studies.md).

A manifest (TOML) names a shared protocol and the models; :func:`run_study` extracts and
analyses each model as an independent, resumable job (training it first when the manifest
asks), :func:`build_study` stacks the finished models' metrics along ``model`` into one
dataset with their metadata and the rank correlations with robust accuracy, and
:func:`write_study_report` draws the comparison. ``nc-study`` is the command.

Running models needs the ``extract`` extra (torch); the manifest, the status, the dataset and
the report do not import torch.
"""

from .dataset import build_study, write_study
from .manifest import Manifest, ManifestError, ModelEntry, Protocol, StudyError, load_manifest
from .report import write_study_report
from .runner import RunResult, run_study
from .state import status

__all__ = ["Manifest", "ManifestError", "ModelEntry", "Protocol", "RunResult", "StudyError",
           "build_study", "load_manifest", "run_study", "status", "write_study",
           "write_study_report"]
