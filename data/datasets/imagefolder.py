"""A class-per-sub-folder image set (e.g. Imagenette), read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import DatasetError, make_dataset

_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


#: Pillow's resampling filters by the names torchvision, timm and Hugging Face use
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def _read(path: Path, size, crop: int | None, interpolation: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    resample = getattr(Image.Resampling, interpolation.upper())
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if isinstance(size, int):  # the shorter side to ``size``, the aspect kept
                # the longer side truncated, as torchvision's Resize (timm's eval transform
                # is torchvision's), so that pixels match the weights' own pipeline
                short, long = sorted((w, h))
                long = max(crop or size, int(size * long / short))
                target = (size, long) if w <= h else (long, size)
            else:  # exactly (height, width)
                target = (size[1], size[0])
            im = im.resize(target, resample)
            if crop:
                w, h = im.size
                left, top = int(round((w - crop) / 2)), int(round((h - crop) / 2))
                im = im.crop((left, top, left + crop, top + crop))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"imagefolder: cannot read image {str(path)!r}: {e}") from None


def _check_geometry(size, crop, interpolation):
    """``(size, crop)`` normalised: size an int or a (height, width) pair, crop an int or
    None; a one-line error for anything else."""
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = size[0]
    pair = (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size))
    if not (pair or (isinstance(size, int) and size > 0)):
        raise DatasetError(f"imagefolder: `size` {size!r} is not a positive int (the shorter "
                           "side) or a (height, width) pair")
    if crop is not None and not (isinstance(crop, int) and crop > 0):
        raise DatasetError(f"imagefolder: `crop` {crop!r} is not a positive int")
    if interpolation not in INTERPOLATIONS:
        raise DatasetError(f"imagefolder: `interpolation` {interpolation!r} is not one of "
                           f"{', '.join(INTERPOLATIONS)}")
    if pair:
        size = tuple(size)
        if crop is not None and crop > min(size):
            raise DatasetError(f"imagefolder: `crop` {crop} is larger than the resized "
                               f"image {size[0]}x{size[1]}")
        return size, crop
    return size, crop or size


def load_imagefolder(root, size=160, crop: int | None = None,
                     interpolation: str = "bilinear") -> Dataset:  # noqa: F821
    """Images under ``root/<split>/<class>/`` (or ``root/<class>/`` as one ``train`` split).

    Each image is resized (``interpolation``: a Pillow filter) so that its shorter side is
    ``size``, or to exactly ``size = (height, width)``, then centre-cropped to ``crop``
    (default: ``size`` when it is an int, no crop for a pair). Pretrained weights set all
    three from their own preprocessing (docs/your-model.md). Class names are the sorted
    sub-folder names of the first split; every split must have the same classes.
    Imagenette's ``val`` split is renamed ``test``.
    """
    if root is None:
        raise DatasetError("imagefolder: `root` is required (a folder of class folders)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"imagefolder: folder {str(root)!r} does not exist; expected "
                           "<root>/<split>/<class>/<image> or <root>/<class>/<image>")
    size, crop = _check_geometry(size, crop, interpolation)
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if not split_dirs:
        split_dirs = {"train": root}
    classes = None
    splits = {}
    for split, folder in split_dirs.items():
        names = _classes(folder)
        if classes is None:
            classes = names
        elif names != classes:
            raise DatasetError(f"imagefolder: split {split!r} has classes {names}, expected "
                               f"{classes} as in the first split")
        xs, ys = [], []
        for c, cname in enumerate(classes):
            files = sorted(p for p in (folder / cname).iterdir()
                           if p.suffix.lower() in _EXTENSIONS)
            xs += [_read(p, size, crop, interpolation) for p in files]
            ys += [c] * len(files)
        if not xs:
            raise DatasetError(f"imagefolder: no images ({', '.join(sorted(_EXTENSIONS))}) under "
                               f"{str(folder)!r}/<class>/")
        splits["test" if split == "val" else split] = (
            np.stack(xs).astype(np.float32) / 255.0, np.asarray(ys))
    return make_dataset("imagefolder", splits, classes, root,
                        {"size": list(size) if isinstance(size, tuple) else size, "crop": crop,
                         "interpolation": interpolation})
