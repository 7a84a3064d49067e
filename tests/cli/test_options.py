"""Options objects check themselves when built: Python and CLI users get the same message."""

import dataclasses

import pytest

from ncprobe.analyze.run import AnalysisOptions
from ncprobe.data.errors import for_cli
from ncprobe.data.params import Interval, OneOf, Optional, ParameterError, StrList


@pytest.mark.parametrize(("constraint", "good", "bad", "said"), [
    (Interval(int, 1), [1, 10**9], [0, 1.5, True, "3"], "an int >= 1"),
    (Interval(float, 0, open_low=True), [1e-9, 2], [0, -1, float("nan"), None],
     "a number > 0"),
    (Interval(float, 0, 1), [0, 0.5, 1], [1.01, -0.01], "a number in [0, 1]"),
    (OneOf(("a", "b")), ["a", "b"], ["c", None, 1], "one of 'a', 'b'"),
    (Optional(StrList()), [None, [], ["x"], ("x", "y")], ["x", [1], {"x"}],
     "a list of names, or unset (None)"),
])
def test_constraints_accept_and_describe(constraint, good, bad, said):
    assert all(constraint.accepts(v) for v in good)
    assert not any(constraint.accepts(v) for v in bad)
    assert str(constraint) == said


def test_the_same_one_line_message_from_python_and_the_cli(capsys):
    from ncprobe.analyze.cli import build_parser, main

    with pytest.raises(ParameterError) as caught:
        AnalysisOptions(dense_limit=0)
    assert str(caught.value) == "`dense_limit` must be an int >= 1; got 0"
    assert main(["any.zarr", "--out", "m.zarr", "--dense-limit", "0"]) == 2
    assert capsys.readouterr().err == (
        f"nc-analyze: error: {for_cli(str(caught.value), build_parser().flags)}\n")


def test_replace_checks_again():
    opts = AnalysisOptions()
    with pytest.raises(ParameterError, match="`shuffle_seed` must be an int >= 0; got -1"):
        dataclasses.replace(opts, shuffle_seed=-1)


@pytest.mark.torch
def test_extract_and_train_configs_check_themselves():
    from ncprobe.extract import ExtractConfig, TrainConfig

    with pytest.raises(ParameterError, match="^`compression` must be one of 'lz4', 'zstd', "):
        ExtractConfig(checkpoints=["x.pt"], compression="gzip")
    with pytest.raises(ParameterError, match=r"^`lr` must be a number > 0; got 0$"):
        TrainConfig(lr=0)
    with pytest.raises(ParameterError, match=r"^`train_limit` must be an int >= 1, or unset"):
        TrainConfig(train_limit=0)
