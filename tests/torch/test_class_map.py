"""Dataset classes matched to a model's outputs (ncprobe.extract.class_map)."""

import json
import re

import pytest
import torch

from ncprobe.data.datasets.imagenet import imagenet1k_wnids
from ncprobe.data.store.schema import OUTSIDE
from ncprobe.extract.class_map import ClassMapError, resolve_class_map

pytestmark = pytest.mark.torch


def test_imagenet_wnids_are_the_sorted_1000_synsets():
    wnids = imagenet1k_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"  # tench, toilet tissue


def test_wnid_folders_map_to_their_outputs_and_back():
    m = resolve_class_map(["n01440764", "n02102040", "n15075141"], 1000)
    assert m.index == (0, 217, 999) and m.source == "ImageNet-1k WordNet ids"
    assert m.to_outputs(torch.tensor([2, 0, 1])).tolist() == [999, 0, 217]
    # -1 (untargeted) is kept; outputs of no dataset class are OUTSIDE
    assert m.to_classes(torch.tensor([217, 5, -1, 999])).tolist() == [1, OUTSIDE, -1, 2]


def test_same_classes_need_no_map_unless_the_labels_are_in_another_order():
    assert resolve_class_map(["a", "b", "c"], 3) is None
    assert resolve_class_map(["a", "b", "c"], 3, labels=["a", "b", "c"]) is None
    # a model whose labels are not the sorted folder order is not read as the same order
    assert resolve_class_map(["a", "b", "c"], 3, labels=["c", "a", "b"]).index == (1, 2, 0)


def test_label_names_match_by_first_name_ignoring_case():
    labels = ["tench, Tinca tinca", "Goldfish", "x"]
    assert resolve_class_map(["goldfish", "tench"], 3, labels=labels).index == (1, 0)


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_file_maps_names(tmp_path, suffix):
    path = tmp_path / f"map{suffix}"
    given = {"cat": 281, "dog": 7, "unused": 3}
    path.write_text(json.dumps(given) if suffix == ".json"
                    else "".join(f"{k} {v}\n" for k, v in given.items()))
    m = resolve_class_map(["cat", "dog"], 1000, path=path)
    assert m.index == (281, 7) and m.source == f"class_map map{suffix}"


@pytest.mark.parametrize(("text", "classes", "message"), [
    ("cat 1\n", ["cat", "dog"], "maps no output to class(es) dog"),
    ("cat 1\ndog 1\n", ["cat", "dog"], "classes 'cat' and 'dog' both map to output 1"),
    ("cat 1\ndog 1000\n", ["cat", "dog"], "class 'dog' maps to output 1000, but the model has "
                                          "outputs 0..999"),
    ("cat one\n", ["cat"], "class 'cat' maps to 'one'; expected an integer output index"),
])
def test_bad_files_are_one_line(tmp_path, text, classes, message):
    path = tmp_path / "map.txt"
    path.write_text(text)
    with pytest.raises(ClassMapError, match=re.escape(message)):
        resolve_class_map(classes, 1000, path=path)


def test_unmatched_classes_and_too_many_classes_are_refused():
    with pytest.raises(ClassMapError, match="has 1000 outputs and the dataset 2 classes"):
        resolve_class_map(["cat", "dog"], 1000)
    with pytest.raises(ClassMapError, match="n09999999 are not ImageNet-1k WordNet ids"):
        resolve_class_map(["n01440764", "n09999999"], 1000)
    with pytest.raises(ClassMapError, match="the dataset has 3 classes but the model only 2"):
        resolve_class_map(["a", "b", "c"], 2)


def test_outside_is_below_the_unknown_code():
    """The analysis kernels count codes below -1 (not -1: predictions unknown, untargeted)
    as predictions outside the dataset's classes, without importing the store's names."""
    assert OUTSIDE < -1
