"""Every row of docs/bad-inputs.md: exit status 2, exactly its one-line message, no damage."""

import shlex
from pathlib import Path

import pytest
import zarr

from ncprobe.analyze.cli import main as analyze_main
from ncprobe.extract.cli import main as extract_main
from ncprobe.extract.training.cli import main as train_main
from ncprobe.plots.cli import main as plot_main
from tests.bad_inputs import make_fixtures, make_hub_fixtures, rows

MAINS = {"nc-train": train_main, "nc-extract": extract_main, "nc-analyze": analyze_main,
         "nc-plot": plot_main}
ROWS = rows()


def test_table_has_at_least_25_rows_across_every_command():
    assert len(ROWS) >= 25
    assert {r[1] for r in ROWS} == set(MAINS)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        tmp = tmp_path_factory.mktemp("bad")
        make_hub_fixtures(tmp, mp)
        yield make_fixtures(tmp)


@pytest.mark.parametrize(("number", "command", "args", "message"), ROWS,
                         ids=[f"row{r[0]}" for r in ROWS])
def test_bad_input_row(fx, capsys, number, command, args, message):
    store_before = zarr.open_group(fx["store"], mode="r").attrs.asdict()
    assert MAINS[command](shlex.split(args.format(**fx))) == 2
    err = capsys.readouterr().err
    assert err == message.format(**fx) + "\n"
    # nothing already written was lost or changed
    assert zarr.open_group(fx["store"], mode="r").attrs.asdict() == store_before
    assert (Path(fx["tmp"]) / "notastore" / "thesis.tex").read_text() == "keep me"
