"""A contributor's own images: ``PATH/<label>/*.png|jpg``, one subfolder per class, named by
the class's label (``PATH/7/a.png`` is a 7), as torchvision's ImageFolder and Keras'
``image_dataset_from_directory`` lay them out.

Read with Pillow into the raw pixels the task's data spec describes: grayscale ("L") for a
spec of shape (H, W) or (H, W, 1), RGB for (H, W, 3); a spec that is no image (a table) is
refused. Images are never resized: a resize changes what the model learns from (blur,
aspect ratio), so an image of the wrong size is refused in one line naming it, and the
contributor decides how to resize. The size is read from the image's header, before its
pixels are decoded, so a huge image is refused without being loaded.

The layout is strict, each problem one DataError line: a file at the top level, a folder
nested in a class folder, a file that is not a .png/.jpg/.jpeg image Pillow can read, a class
folder that is not one of the task's labels, an empty folder or class folder. Hidden entries
(``.DS_Store``, ``.ipynb_checkpoints``) are skipped. A link is followed only when it stays
inside PATH: data outside the folder the contributor named is never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from decentralml.ml.data.base import DataSpec, Split
from decentralml.protocol.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MODES = {1: "L", 3: "RGB"}


def read_image_folder(root: Path, spec: DataSpec | None = None) -> Split:
    """``(x, y)``: the images as uint8 pixels in the spec's shape, and their labels. Without
    a spec (the CLI's first look, before any task), grayscale and checked only for a size
    they all share."""
    size, mode = _image_format(spec, str(root))
    wanted = "the task needs"
    images, labels = [], []
    for label, path in _image_files(root, spec):
        images.append(_pixels(path, root, mode, size, wanted))
        if size is None:  # no spec: the first image sets the size the others must have
            size, wanted = (images[-1].shape[1], images[-1].shape[0]), "the others are"
        labels.append(label)
    x = np.stack(images)
    if spec is not None:
        x = x.reshape((len(x), *spec.input_shape))
    return x, np.asarray(labels, dtype=np.int64)


def _image_format(spec: DataSpec | None, source: str) -> tuple[tuple[int, int] | None, str]:
    """The (width, height) and Pillow mode the spec asks for; no size without a spec."""
    if spec is None:
        return None, "L"
    shape = tuple(spec.input_shape)
    channels = 1 if len(shape) == 2 else shape[-1] if len(shape) == 3 else 0
    if channels not in _MODES:
        raise DataError(
            f"local data {source}: the task's examples have shape {shape}, not an image "
            "(height, width[, 1 or 3 channels]); give an .npz or .csv instead of a folder"
        )
    return (shape[1], shape[0]), _MODES[channels]


def _image_files(root: Path, spec: DataSpec | None) -> Iterator[tuple[int, Path]]:
    classes = list(_entries(root, root))
    if not classes:
        raise DataError(f"local data {root} holds no class folders (expected {root}/<label>/)")
    for folder in classes:
        if not folder.is_dir():
            raise DataError(
                f"local data {root}: {folder.name} is a file at the top level; images go in "
                f"one folder per class, named by its label ({root}/<label>/{folder.name})"
            )
        label = _label(folder, root, spec)
        files = list(_entries(folder, root))
        if not files:
            raise DataError(f"local data {root}: class folder {folder.name} holds no images")
        for path in files:
            if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
                kind = "a folder" if path.is_dir() else "not a .png/.jpg/.jpeg image"
                raise DataError(f"local data {root}: {_name(path, root)} is {kind}")
            yield label, path


def _entries(folder: Path, root: Path) -> Iterator[Path]:
    """A folder's visible entries, sorted (the same data gives the same order); a link
    leading out of ``root`` is refused, not followed."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            raise DataError(
                f"local data {root}: {_name(path, root)} links outside the folder "
                "(links are followed only inside it)"
            )
        yield path


def _label(folder: Path, root: Path, spec: DataSpec | None) -> int:
    labels = list(spec.labels) if spec is not None else None
    try:
        label = int(folder.name)
    except ValueError:
        label = None
    if label is None or (labels is not None and label not in labels):
        allowed = f"one of the task's labels {labels}" if labels is not None else "a label"
        raise DataError(
            f"local data {root}: class folder {folder.name!r} is not {allowed} "
            "(class folders are named by their label, e.g. 7)"
        )
    return label


def _pixels(
    path: Path, root: Path, mode: str, size: tuple[int, int] | None, wanted: str
) -> np.ndarray:
    """The image's pixels in ``mode``, after checking its header's size against ``size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if size is not None and image.size != size:
                raise DataError(
                    f"local data {root}: {_name(path, root)} is {_wxh(image.size)} pixels, "
                    f"{wanted} {_wxh(size)} (images are not resized here: resize them yourself)"
                )
            return np.asarray(image.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise DataError(
            f"local data {root}: {_name(path, root)} cannot be read as an image: {reason}"
        ) from None


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
