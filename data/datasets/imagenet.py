"""The ImageNet-1k classes as WordNet ids, in the order of an ImageNet classifier's outputs.

Output ``i`` of every ImageNet-1k classifier (torchvision, timm, Hugging Face) is the ``i``-th
of the 1000 ILSVRC-2012 synset ids sorted as strings: the order in which a class-per-folder
loader enumerates the training folders. An image folder whose class folders are named by these
ids (Imagenette, ImageNet-100, any hand-picked subset) is matched to the outputs by name.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

#: a WordNet noun synset id, as ImageNet names its class folders
WNID = re.compile(r"n\d{8}")


@cache
def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids; index ``i`` is output ``i`` of an ImageNet model."""
    return tuple(files(__package__).joinpath("imagenet1k_wnids.txt").read_text().split())


def are_wnids(names) -> bool:
    """Whether every name is a WordNet id (``n01440764``)."""
    return bool(names) and all(WNID.fullmatch(str(n)) for n in names)
