"""A class-per-sub-folder image set (e.g. Imagenette), read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import DatasetError, make_dataset

_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read(path: Path, size: int, crop: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(crop, round(w * scale)), max(crop, round(h * scale))),
                           Image.BILINEAR)
            w, h = im.size
            left, top = (w - crop) // 2, (h - crop) // 2
            im = im.crop((left, top, left + crop, top + crop))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"imagefolder: cannot read image {str(path)!r}: {e}") from None


def load_imagefolder(root, size: int = 160, crop: int | None = None) -> Dataset:  # noqa: F821
    """Images under ``root/<split>/<class>/`` (or ``root/<class>/`` as one ``train`` split).

    Each image is resized so its shorter side is ``size`` and centre-cropped to ``crop``
    (default ``size``). Class names are the sorted sub-folder names of the first split; every
    split must have the same classes. Imagenette's ``val`` split is renamed ``test``.
    """
    if root is None:
        raise DatasetError("imagefolder: `root` is required (a folder of class folders)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"imagefolder: folder {str(root)!r} does not exist; expected "
                           "<root>/<split>/<class>/<image> or <root>/<class>/<image>")
    crop = crop or size
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
            xs += [_read(p, size, crop) for p in files]
            ys += [c] * len(files)
        if not xs:
            raise DatasetError(f"imagefolder: no images ({', '.join(sorted(_EXTENSIONS))}) under "
                               f"{str(folder)!r}/<class>/")
        splits["test" if split == "val" else split] = (
            np.stack(xs).astype(np.float32) / 255.0, np.asarray(ys))
    return make_dataset("imagefolder", splits, classes, root, {"size": size, "crop": crop})
