import os

import pytest

# tiny models and numpy kernels: one BLAS/torch thread is faster here and keeps runs repeatable
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def digits_checkpoints(tmp_path_factory):
    """Checkpoints folder of a digits mlp trained for 2 epochs (epochs 1 and 2 saved)."""
    from ncprobe.extract.training import TrainConfig, train

    d = tmp_path_factory.mktemp("digits-run")
    train(TrainConfig(epochs=2, save_epochs=[1], schedule="constant", lr=0.05), d / "run",
          progress=False)
    return d / "run" / "checkpoints"


@pytest.fixture(scope="session")
def ckpt(digits_checkpoints):
    """The same folder under the short name the extraction tests use."""
    return digits_checkpoints
