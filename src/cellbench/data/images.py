"""Load cell images into a :class:`~cellbench.data.Dataset` of shape ``(n, C, H, W)``.

Sources:

* a folder with one subfolder per class (``root/<class>/*.png|jpg|tif|tiff|bmp``), or a
  folder of images plus a CSV sample sheet ``file,label[,<group column>]``;
* an ``.npz`` in the MedMNIST layout (``train_images``, ``train_labels``, ``val_*``,
  ``test_*``: the given split is kept) or generic (``X``, ``y``, optional group key).

Images keep their type (8-bit → uint8, 16-bit → uint16) and are written straight into one
preallocated array: no per-image copies in Python lists. Multi-page TIFFs become channels.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import format_list
from ..exceptions import CellbenchWarning, DataError
from . import checks
from .dataset import Dataset
from .labels import check_labels
from .sheets import read_sample_sheet, sheet_entries

__all__ = [
    "IMAGE_SUFFIXES",
    "is_image_source",
    "iter_images_for_prediction",
    "load_images",
    "read_image",
    "read_images_for_prediction",
    "resize_images",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
GROUP_COLUMNS = ("patient", "group", "slide", "sample")  # a sample sheet's group, in order


def is_image_source(path: str | Path) -> bool:
    """True for an .npz file or a folder holding image files: directly, in class subfolders,
    or one level below those (``root/<class>/<slide>/*.png``)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".npz"
    if not path.is_dir():
        return False
    for item in path.iterdir():
        if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES:
            return True
        if item.is_dir() and _class_files(item):
            return True
    return False


SKIP_BAD_FIX = "Replace or remove it, or pass --skip-bad."
PREDICT_FIX = "Replace or remove it: predict scores every image it is given."


def read_image(path: str | Path, fix: str = SKIP_BAD_FIX) -> np.ndarray:
    """One image as ``(C, H, W)``: uint8, uint16 or float32, as stored (``fix``: the advice
    an unreadable file's error ends with)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data, axes = series.asarray(), series.axes
            if data.ndim == 2:
                data = data[None]
            elif axes.endswith("S"):  # samples per pixel last: (..., H, W, S)
                data = np.moveaxis(data, -1, 0).reshape(-1, *data.shape[-3:-1])
            else:  # pages or planes first: each becomes a channel
                data = data.reshape(-1, *data.shape[-2:])
        else:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("P", "1", "LA", "PA"):
                    im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info
                                    else "RGB" if im.mode == "P" else "L")
                data = np.asarray(im)
            if data.ndim == 2:
                data = data[None]
            else:
                data = np.moveaxis(data, -1, 0)
    except Exception as exc:  # Pillow and tifffile raise many types on damaged files
        raise DataError(
            f"image file {str(path)!r} must be a readable PNG/JPEG/TIFF/BMP image; reading failed "
            f"({type(exc).__name__}: {exc}). {fix}"
        ) from exc
    if data.dtype == np.int32 and data.min() >= 0 and data.max() < 2**16:
        data = data.astype(np.uint16)  # Pillow opens some 16-bit files as 32-bit ints
    if data.dtype not in (np.uint8, np.uint16, np.float32):
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        else:
            raise DataError(f"image file {str(path)!r} must be 8-bit, 16-bit or float; got "
                            f"{data.dtype}. Convert it first.")
    return np.ascontiguousarray(data)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(n, C, H, W)`` to ``size x size``: bilinear with antialiasing, type kept."""
    import torch
    import torch.nn.functional as F

    dtype = images.dtype
    t = torch.from_numpy(images.astype(np.float32))  # a copy: the input may be read-only
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    if dtype != np.float32:
        info = np.iinfo(dtype)
        out = out.round().clamp(info.min, info.max)
    return out.numpy().astype(dtype)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def _collect_folder(root: Path, sample_sheet: str | Path | None, group_column: str | None,
                    require_labels: bool = True) -> list[tuple[Path, str, Any]]:
    entries: list[tuple[Path, str, Any]] = []
    if sample_sheet is not None:
        sheet = read_sample_sheet(sample_sheet, known=(*GROUP_COLUMNS, *([group_column]
                                                                        if group_column else [])))
        if group_column is not None and group_column.lower() not in sheet.columns:
            raise DataError(f"groups column {group_column!r} must be in sample sheet "
                            f"{str(sample_sheet)!r}; its columns are {list(sheet.columns)}.")
        col = (group_column or "").lower() or next(
            (c for c in GROUP_COLUMNS if c in sheet.columns), None)
        return sheet_entries(sheet, sample_sheet, root, col)
    subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    if not subfolders and not require_labels:
        return [(f, "", None) for f in _image_files(root)]
    if not subfolders:
        raise DataError(
            f"an image folder must hold one subfolder per class (root/<class>/*.png) or come "
            f"with a sample sheet (--sample-sheet file,label[,group]); {str(root)!r} has "
            "neither."
        )
    for sub in subfolders:
        files = _class_files(sub)
        if not files:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(
                f"class folder {str(sub)!r} must contain images ({kinds}), directly or in "
                "subfolders; it has none. Remove the folder or add its images."
            )
        entries.extend((f, sub.name, group) for f, group in files)
    nested = [e for e in entries if e[2] is not None]
    if nested and len(nested) < len(entries):
        loose = next(e[0] for e in entries if e[2] is None)
        raise DataError(
            f"class folders of {str(root)!r} must hold images either directly or in subfolders "
            f"(root/<class>/<slide>/*.png, the subfolder being the group); got both, e.g. "
            f"{str(loose.relative_to(root))!r} and {str(nested[0][0].relative_to(root))!r}. "
            "Move the loose images into a subfolder of their own.")
    return entries


def _class_files(folder: Path) -> list[tuple[Path, str | None]]:
    """A class folder's images: ``(file, None)`` for files in it, ``(file, subfolder)`` for
    files one level down (``<class>/<slide>/*.png``: the subfolder is the file's group;
    hidden folders such as ``.ipynb_checkpoints`` are not read)."""
    files: list[tuple[Path, str | None]] = [(f, None) for f in _image_files(folder)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files.extend((f, sub.name) for f in _image_files(sub))
    return files


def _describe_shapes(shapes: dict[tuple, list[str]], what: str) -> str:
    parts = [f"{what(shape)} ({len(files)} files, e.g. {format_list(files, 2)})"
             for shape, files in sorted(shapes.items(), key=lambda kv: -len(kv[1]))]
    return "; ".join(parts[:5])


def _read_all(entries: list[tuple[Path, str, Any]], resize: int | None,
              skip_bad: bool, fix: str = SKIP_BAD_FIX) -> tuple[np.ndarray, np.ndarray]:
    """Decode every file into one preallocated array; returns (images, kept-row mask)."""
    n = len(entries)
    images: np.ndarray | None = None
    keep = np.zeros(n, bool)
    sizes: dict[tuple, list[str]] = {}
    channels: dict[tuple, list[str]] = {}
    depths: dict[tuple, list[str]] = {}
    bad: list[str] = []
    for i, (path, _, _) in enumerate(entries):
        try:
            img = read_image(path, fix)
        except DataError:
            if not skip_bad:
                raise
            bad.append(path.name)
            continue
        if resize is not None and img.shape[1:] != (resize, resize):
            img = resize_images(img[None], resize)[0]
        sizes.setdefault(img.shape[1:], []).append(path.name)
        channels.setdefault((img.shape[0],), []).append(path.name)
        depths.setdefault((str(img.dtype),), []).append(path.name)
        if images is None:
            images = np.empty((n, *img.shape), dtype=img.dtype)
        if img.shape == images.shape[1:] and img.dtype == images.dtype:
            images[i] = img
            keep[i] = True
    if images is None:
        raise DataError(f"image files must be readable; none of the {n} files could be read "
                        f"({format_list(bad)}).")
    if len(sizes) > 1:
        raise DataError(
            "images must all have the same size; got "
            + _describe_shapes(sizes, lambda s: f"{s[1]}x{s[0]}")
            + ". Pass --resize N to resize every image to N x N (bilinear with antialiasing)."
        )
    if len(channels) > 1:
        raise DataError(
            "images must all have the same number of channels; got "
            + _describe_shapes(channels, lambda s: f"{s[0]} channel(s)")
            + ". Convert them to one colour mode (e.g. all grayscale) first."
        )
    if len(depths) > 1:
        raise DataError(
            "images must all have the same bit depth; got "
            + _describe_shapes(depths, lambda s: s[0])
            + ". Convert them to one bit depth first."
        )
    if bad:
        warnings.warn(f"Skipped {len(bad)} unreadable image files (--skip-bad): "
                      f"{format_list(bad)}.", CellbenchWarning, stacklevel=3)
    return images, keep


def _groups_from_regex(names: Sequence[str], pattern: str) -> np.ndarray:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"group regex must be a valid regular expression; got {pattern!r} "
                        f"({exc}).") from exc
    out = []
    for name in names:
        match = regex.search(name)
        if match is None:
            raise DataError(f"group regex {pattern!r} must match every file name; it does not "
                            f"match {name!r}. Adjust the pattern (its first group is the id).")
        out.append(match.group(1) if regex.groups else match.group(0))
    return np.asarray(out)


def _labels(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    classes, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64), classes.tolist()


def _nchw(images: np.ndarray, key: str, source: str) -> np.ndarray:
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        if images.shape[-1] <= 4 < images.shape[1]:
            return np.ascontiguousarray(np.moveaxis(images, -1, 1))
        if images.shape[1] <= 4:
            return images
    raise DataError(f"{source} key {key!r} must hold images as (n, H, W), (n, H, W, C) or "
                    f"(n, C, H, W) with C <= 4; got shape {images.shape}.")


def _load_npz(path: Path, group_key: str | None) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except Exception as exc:
        raise DataError(f"npz file {str(path)!r} must be a readable numpy archive; reading "
                        f"failed ({type(exc).__name__}: {exc}).") from exc
    source = f"npz file {str(path)!r}"
    try:
        return _npz_dataset(z, keys, path, source, group_key)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DataError(
            f"{source} must hold plain numeric or text arrays; one of its arrays holds Python "
            "objects (saved with dtype=object), which cellbench does not unpickle: loading "
            "them could run code. Save it again with numeric arrays and text labels, e.g. "
            "np.savez(path, X=X.astype('float32'), y=np.asarray(y, dtype=str))."
        ) from None
    finally:
        z.close()


def _one_label_each(labels: np.ndarray, key: str, source: str) -> np.ndarray:
    """Labels as one value per image: ``(n, 1)`` flattened, one-hot ``(n, k)`` rows as the
    index of their 1; other 2-D labels (several per image) are refused."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        return labels[:, 0]
    if labels.ndim == 2 and labels.dtype.kind in "biuf" and len(labels) and \
            np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all():
        return labels.argmax(axis=1)  # one-hot
    if labels.ndim != 1:
        raise DataError(f"{source} key {key} must hold one label per image; got shape "
                        f"{labels.shape}, and its rows are not one-hot (multi-label tasks are "
                        "not supported). Save one class per image, e.g. y.argmax(axis=1).")
    return labels


def _npz_dataset(z: Any, keys: set[str], path: Path, source: str,
                 group_key: str | None) -> Dataset:
    label_names = None
    names_key = next((k for k in ("label_names", "class_names") if k in keys), None)
    if names_key is not None:  # e.g. ['0=Uninfected', '1=Parasitized'] or ['a', 'b']
        label_names = [str(n).split("=", 1)[-1] for n in np.atleast_1d(z[names_key])]
    if "train_images" in keys:  # MedMNIST layout, the given split kept
        parts, xs, ys = [], [], []
        for part in ("train", "val", "test"):
            if f"{part}_images" in keys:
                if f"{part}_labels" not in keys:
                    raise DataError(f"{source} must have {part}_labels beside {part}_images.")
                labels = _one_label_each(z[f"{part}_labels"], f"{part}_labels", source)
                xs.append(_nchw(z[f"{part}_images"], f"{part}_images", source))
                ys.append(labels)
                parts.append(np.full(len(labels), part))
        shapes = {x.shape[1:] for x in xs}
        if len(shapes) > 1:
            raise DataError(f"{source} must use one image shape in all parts; got {shapes}.")
        X, y_raw, split = np.concatenate(xs), np.concatenate(ys), np.concatenate(parts)
        groups = None
    elif "X" in keys and "y" in keys:
        X, y_raw, split = _nchw(z["X"], "X", source), _one_label_each(z["y"], "y", source), None
        group_key = group_key or ("groups" if "groups" in keys else None)
        groups = None
        if group_key is not None:
            if group_key not in keys:
                raise DataError(f"groups key {group_key!r} must be in {source}; its keys are "
                                f"{sorted(keys)}.")
            groups = z[group_key]
            if groups.shape != (len(X),):
                raise DataError(f"{source} key {group_key!r} must hold one group id per image "
                                f"({len(X)}); got shape {groups.shape}.")
    else:
        raise DataError(f"{source} must hold train_images/train_labels (MedMNIST layout) or "
                        f"X and y; its keys are {sorted(keys)}.")
    if len(y_raw) != len(X):
        raise DataError(f"{source} must have one label per image; got {len(X)} images and "
                        f"{len(y_raw)} labels.")
    if X.dtype.kind not in "uif":
        raise DataError(f"{source} must hold images as numbers (uint8, uint16 or float); got "
                        f"dtype {X.dtype}. Convert them, e.g. X.astype('float32').")
    y, classes = _labels(y_raw)
    if label_names is not None and all(isinstance(c, int) and 0 <= c < len(label_names)
                                       for c in classes):
        classes = [label_names[c] for c in classes]
    return Dataset(X=X, y=y, classes=classes, groups=groups, split=split, kind="image",
                   source=str(path), group_name=group_key if groups is not None else None)


def load_images(source: str | Path, *, sample_sheet: str | Path | None = None,
                groups: str | None = None, group_regex: str | None = None,
                resize: int | None = None, skip_bad: bool = False) -> Dataset:
    """Load an image dataset (see the module docstring for the layouts).

    Parameters
    ----------
    source : path
        Folder of class subfolders, folder with a sample sheet, or ``.npz``.
    sample_sheet : path, optional
        CSV ``file,label[,group column]``; files relative to ``source``.
    groups : str, optional
        Group column of the sample sheet, or key of a generic ``.npz`` (e.g. ``slide_id``).
    group_regex : str, optional
        Group from each file name: the regex's first group (e.g. ``^(C\\d+P\\d+)``).
    resize : int, optional
        Resize every image to ``resize x resize``; otherwise sizes must agree.
    skip_bad : bool
        Skip unreadable files (with a warning and a count) instead of failing.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"data path must exist; got {str(path)!r}, which does not.")
    if resize is not None and (not isinstance(resize, int) or resize < 4):
        raise DataError(f"resize must be an int >= 4 (pixels); got {resize!r}.")
    if path.is_file():
        ds = _load_npz(path, groups)
        if resize is not None and ds.X.shape[-2:] != (resize, resize):
            ds.X = resize_images(ds.X, resize)
        if group_regex is not None:
            raise DataError("group regex needs file names; an .npz has none. Use --groups "
                            "with one of its keys instead.")
    else:
        entries = _collect_folder(path, sample_sheet, groups)
        images, keep = _read_all(entries, resize, skip_bad)
        entries = [e for e, k in zip(entries, keep, strict=True) if k]
        X = images if keep.all() else images[keep]
        y, classes = _labels([e[1] for e in entries])
        group_values = None
        group_name = None
        if group_regex is not None:
            group_values = _groups_from_regex([e[0].name for e in entries], group_regex)
            group_name = f"regex {group_regex!r}"
        elif any(e[2] is not None for e in entries):
            group_values = np.asarray([str(e[2]) for e in entries])
            group_name = groups or ("group" if sample_sheet is not None else "subfolder")
        ds = Dataset(X=X, y=y, classes=classes, groups=group_values, kind="image",
                     source=str(path), group_name=group_name)
    if ds.X.dtype.kind == "f":
        bad = ~np.isfinite(ds.X.reshape(len(ds.X), -1)).all(axis=1)
        if bad.any():
            raise DataError(f"images must hold finite pixel values; {int(bad.sum())} of "
                            f"{len(bad)} have NaN or inf (first: image {int(np.argmax(bad)) + 1})."
                            " Replace those values (e.g. np.nan_to_num) or remove the images.")
    ds.issues.extend(checks.check_dataset(ds))
    ds.issues.extend(check_labels(ds))
    return ds


PREDICT_IMAGES = 512  # images of a folder decoded (and predicted) at a time


def read_images_for_prediction(source: str | Path, resize: int | None = None
                               ) -> tuple[np.ndarray, list[str], list[str] | None]:
    """Images to predict: one file, a folder (flat or one subfolder per class) or an .npz.

    Returns ``(images, names, labels)``; ``labels`` is None when the source has none.
    """
    parts = list(iter_images_for_prediction(source, resize, chunk=None))
    labels = None if parts[0][2] is None else [v for p in parts for v in p[2]]
    return (np.concatenate([p[0] for p in parts]), [v for p in parts for v in p[1]], labels)


def iter_images_for_prediction(source: str | Path, resize: int | None = None,
                               chunk: int | None = PREDICT_IMAGES
                               ) -> Iterator[tuple[np.ndarray, list[str], list[str] | None]]:
    """:func:`read_images_for_prediction` in pieces: a folder's files ``chunk`` at a time
    (None: all at once), so memory holds one piece of decoded images, not the folder. One
    file and an .npz come as one piece."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        images = read_image(path, PREDICT_FIX)[None]
        if resize is not None:
            images = resize_images(images, resize)
        yield images, [path.name], None
        return
    if path.is_file():
        ds = _load_npz(path, None)
        images = ds.X if resize is None else resize_images(ds.X, resize)
        labels = [str(c) for c in np.asarray(ds.classes, dtype=object)[ds.y]]
        yield images, [f"{path.name}[{i}]" for i in range(len(images))], labels
        return
    entries = _collect_folder(path, None, None, require_labels=False)
    if not entries:
        raise DataError(f"image folder {str(path)!r} must contain images; it has none.")
    labelled = any(e[1] for e in entries)
    step = chunk or len(entries)
    for start in range(0, len(entries), step):
        part = entries[start:start + step]
        images, _ = _read_all(part, resize, skip_bad=False, fix=PREDICT_FIX)
        yield (images, [str(e[0].relative_to(path)) for e in part],
               [e[1] for e in part] if labelled else None)
