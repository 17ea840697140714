"""Image files as raw uint8 samples: decode with Pillow, convert the colour mode, reach the size.

Torch-free. Pillow is optional: it is imported on the first decode, and a missing Pillow raises
:class:`PillowMissingError` (a :class:`DatasetError`, also an ImportError) that names the package.

**The raw sample of an image file** is uint8 in ``layout`` order: ``(H, W, C)`` for "NHWC" (the
default: image files are channels-last), ``(C, H, W)`` for "NCHW", with ``C = 1`` for colour "L"
(grayscale) and ``C = 3`` for "RGB", or ``(H, W)`` for "NHW" (grayscale without a channel axis, as
MNIST's convention has it). Given an input convention (``adt.runtime.preprocess.InputConvention``),
the sample has exactly ``convention.shape``: NHWC RGB -> [H, W, 3]; NCHW RGB -> [3, H, W];
NHW L -> [H, W]; NCHW L -> [1, H, W].

**Sizes.** ``resize="stretch"`` resizes to (H, W) ignoring the aspect ratio; ``"center-crop"`` scales
the image so that it covers (H, W) (for a square target: its shorter side becomes the target) and
crops the centre, as torchvision's ``Resize(min(H, W))`` + ``CenterCrop((H, W))`` do; both bilinear.
``None``: the image must already be H x W, else a :class:`DatasetError` naming the file.

**Bounded costs.** An image whose header declares more than ``max_pixels`` pixels is refused before
its pixels are decoded; a folder whose decoded samples would exceed ``max_bytes`` is refused before
the array is allocated. Both errors name the file or folder, the figure and the limit.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .format.errors import AdtError
from .preprocess import RESIZES

__all__ = [
    "DatasetError", "IMAGE_EXTENSIONS", "IMAGE_LAYOUTS", "MAX_IMAGE_PIXELS", "MAX_TOTAL_BYTES",
    "PillowMissingError", "ImageGeometry", "image_geometry", "list_images", "load_image", "load_image_folder",
    "scan_image_folder",
]

#: File name endings (lower case) read as images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
#: Layouts a decoded image can be returned in ("NHW": grayscale without a channel axis).
IMAGE_LAYOUTS = ("NHWC", "NCHW", "NHW")
#: Default limit on one image's pixel count (width x height, read from its header before decoding).
MAX_IMAGE_PIXELS = 40_000_000
#: Default limit on the bytes of decoded samples one folder may produce (checked before allocating).
MAX_TOTAL_BYTES = 8 * 1024 ** 3

# Pillow modes that decode to grayscale when no colour is asked for (everything else -> RGB).
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class DatasetError(AdtError):
    """Data a user gave cannot be read as a dataset: a missing or malformed file, folder, array key
    or image; the message names the path (and key), the expected and the actual value."""


class PillowMissingError(DatasetError, ImportError):
    """Decoding image files needs Pillow, which is not installed. Also an ImportError."""


def _pil() -> Any:
    """The ``PIL.Image`` module, imported on first use (Pillow is optional)."""
    try:
        from PIL import Image
    except ImportError:
        raise PillowMissingError(
            "reading image files needs Pillow: pip install pillow (or the adt[images] extra)"
        ) from None
    return Image


class ImageGeometry:
    """The target of one decode: height and width (None = the image's own), colour mode (None =
    from the image), resize mode and layout of the returned sample."""

    __slots__ = ("height", "width", "color", "resize", "layout")

    def __init__(self, height: int | None, width: int | None, color: str | None, resize: str | None,
                 layout: str) -> None:
        self.height, self.width, self.color, self.resize, self.layout = height, width, color, resize, layout

    def sample_shape(self) -> tuple[int, ...]:
        """One raw sample's shape (height, width and colour must be known)."""
        assert self.height is not None and self.width is not None and self.color is not None
        h, w, c = self.height, self.width, _COLOR_CHANNELS[self.color]
        return {"NHWC": (h, w, c), "NCHW": (c, h, w), "NHW": (h, w)}[self.layout]

    def __repr__(self) -> str:
        return (f"ImageGeometry(height={self.height}, width={self.width}, color={self.color!r}, "
                f"resize={self.resize!r}, layout={self.layout!r})")


_COLOR_CHANNELS = {"L": 1, "RGB": 3}


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise DatasetError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def image_geometry(shape: Any = None, color: str | None = None, resize: str | None = None,
                   layout: str | None = None) -> ImageGeometry:
    """Normalise the ways a decode target can be given into an :class:`ImageGeometry`.

    ``shape``: None (each image's own size), an int (square), ``(H, W)``, or a full sample shape in
    ``layout`` order (``(H, W, C)`` for NHWC, ``(C, H, W)`` for NCHW; C = 1 or 3 fixes the colour);
    or an :class:`~adt.runtime.preprocess.InputConvention` (any object with ``shape``, ``layout``,
    ``color`` and ``resize``): its values are used, and explicit ``color``/``resize``/``layout``
    must be None or agree. ``layout``: "NHWC" (default), "NCHW" or "NHW" (grayscale, no channel
    axis). ``color``: "L" or "RGB" (None: from the shape, "L" for NHW, else each image's own, "L"
    for grayscale files and "RGB" for the rest). ``resize``: "stretch", "center-crop" or None."""
    if shape is not None and hasattr(shape, "shape") and hasattr(shape, "layout"):
        conv = shape
        for name, given in (("color", color), ("resize", resize), ("layout", layout)):
            if given is not None and given != getattr(conv, name, None):
                raise DatasetError(f"{name} {given!r} disagrees with the input convention's "
                                   f"{getattr(conv, name, None)!r}")
        if conv.color is None:
            raise DatasetError("the input convention has no color mode (it takes arrays, not image files)")
        if conv.layout not in IMAGE_LAYOUTS:
            raise DatasetError(f"the input convention's layout {conv.layout!r} is not an image layout "
                               f"({', '.join(IMAGE_LAYOUTS)})")
        shape, color, resize, layout = tuple(conv.shape), conv.color, conv.resize, conv.layout
    layout = "NHWC" if layout is None else layout
    _check_choice("layout", layout, IMAGE_LAYOUTS)
    if color is not None:
        _check_choice("color", color, tuple(_COLOR_CHANNELS))
    if resize is not None:
        _check_choice("resize", resize, RESIZES)
    if layout == "NHW":
        if color not in (None, "L"):
            raise DatasetError(f"layout NHW (no channel axis) holds grayscale images only, color is {color!r}")
        color = "L"
    if shape is None:
        return ImageGeometry(None, None, color, resize, layout)
    if isinstance(shape, str):  # a command-line value: "32", "24,32" or "24x32"
        try:
            shape = tuple(int(v) for v in shape.lower().replace("x", ",").split(","))
        except ValueError:
            raise DatasetError(f"image size {shape!r}: expected H,W or one side, e.g. 32 or 24,32") from None
        shape = shape * 2 if len(shape) == 1 else shape
    dims = (int(shape), int(shape)) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if len(dims) == 3 and layout != "NHW":
        c, h, w = (dims[2], dims[0], dims[1]) if layout == "NHWC" else dims
        implied = {1: "L", 3: "RGB"}.get(c)
        if implied is None:
            raise DatasetError(f"image shape {list(dims)} ({layout}) has {c} channels; image files give "
                               "1 (L) or 3 (RGB)")
        if color is not None and color != implied:
            raise DatasetError(f"image shape {list(dims)} ({layout}) has {c} channel(s) but color is {color!r}")
        color, dims = implied, (h, w)
    if len(dims) != 2 or min(dims) < 1:
        raise DatasetError(f"image size must be H,W (or one side, or the sample shape in layout {layout}), "
                           f"positive; got {shape!r}")
    return ImageGeometry(dims[0], dims[1], color, resize, layout)


def _is_image_name(f: Path) -> bool:
    # hidden files are skipped: macOS leaves "._name.png" AppleDouble files that are not images
    return f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder`` (by extension, case-insensitive; hidden files
    skipped), sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise DatasetError(f"image folder {str(p)!r} does not exist or is not a folder")
    return sorted(f for f in p.iterdir() if _is_image_name(f) and f.is_file())


def _mode_color(mode: str) -> str:
    return "L" if mode in _GRAY_MODES else "RGB"


def _open_checked(path: Path, max_pixels: int) -> Any:
    """Open ``path`` lazily (header only) and refuse it if it declares more than ``max_pixels``."""
    Image = _pil()
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the cap below decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"{path}: image refused before decoding ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise DatasetError(f"{path}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                           "(refused before decoding)")
    return im


def _resized(im: Any, geo: ImageGeometry, path: Path) -> Any:
    Image = _pil()
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    w, h = im.size
    th, tw = geo.height, geo.width
    if (w, h) == (tw, th):
        return im
    if geo.resize is None:
        raise DatasetError(f"{path}: image is {h}x{w} (HxW), expected {th}x{tw}; give a resize mode "
                           f"({' or '.join(RESIZES)}) to resize it")
    if geo.resize == "stretch":
        return im.resize((tw, th), bilinear)
    # center-crop: the smallest scale that covers the target, then the centre (torchvision's rounding)
    s = max(th / h, tw / w)
    nw, nh = max(tw, int(round(w * s))), max(th, int(round(h * s)))
    im = im.resize((nw, nh), bilinear)
    top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
    return im.crop((left, top, left + tw, top + th))


def _decode(path: Path, geo: ImageGeometry, max_pixels: int) -> np.ndarray:
    src = _open_checked(path, max_pixels)
    try:
        color = geo.color or _mode_color(src.mode)
        try:
            src.load()
            im = src.convert(color) if src.mode != color else src
            im = _resized(im, ImageGeometry(geo.height or im.size[1], geo.width or im.size[0], color,
                                            geo.resize, geo.layout), path)
            arr = np.asarray(im, dtype=np.uint8)
        except DatasetError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt pixel data
            raise DatasetError(f"{path}: cannot decode the image ({exc})") from None
    finally:
        src.close()
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)  # (H, W, C), C = 1 for L
    if geo.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    elif geo.layout == "NHW":
        arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike, shape: Any = None, color: str | None = None, resize: str | None = None,
               *, layout: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """One image file as a raw uint8 sample (see the module docstring for its shape).

    ``shape``: see :func:`image_geometry` (None = the image's own size; an input convention = its
    shape, layout, colour and resize). ``color``: "L" or "RGB" (None = "L" for grayscale files, else
    "RGB"). ``resize``: "stretch", "center-crop" or None (the size must already match)."""
    geo = image_geometry(shape, color, resize, layout)
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"image file {str(p)!r} does not exist")
    return _decode(p, geo, max_pixels)


def scan_image_folder(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files of a torchvision ``ImageFolder`` tree without decoding them: ``(paths, labels int64,
    classes)``. Classes are the sub-folders of ``root`` sorted by name (hidden ones skipped); a class's
    images are found recursively and sorted by path (hidden files skipped); a class folder without
    images is an error."""
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"image folder {str(r)!r} does not exist or is not a folder")
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{r}: no class sub-folders (expected one sub-folder of images per class)")
    paths: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        found = sorted(f for f in (r / name).rglob("*") if _is_image_name(f) and f.is_file())
        if not found:
            raise DatasetError(f"{r / name}: class folder {name!r} holds no image files "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
        labels += [i] * len(found)
    return paths, np.asarray(labels, dtype=np.int64), classes


def load_image_folder(root: str | os.PathLike, shape: Any = None, color: str | None = None,
                      resize: str | None = None, *, layout: str | None = None,
                      max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_TOTAL_BYTES,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A torchvision ``ImageFolder`` tree as ``(images uint8 [N, *sample], labels int64 [N], classes)``.

    ``shape``/``color``/``resize``/``layout``: as :func:`load_image`; when the size or colour is not
    given, the first image (in class, then path order) sets it for all. ``max_bytes`` caps the decoded
    array (checked before it is allocated). A progress bar (stderr) shows when there are 500 files or
    more and ``progress`` is true."""
    geo = image_geometry(shape, color, resize, layout)
    paths, labels, classes = scan_image_folder(root)
    if geo.height is None or geo.color is None:  # fix the size / colour from the first image
        im = _open_checked(paths[0], max_pixels)
        try:
            w, h = im.size
            first_color = _mode_color(im.mode)
        finally:
            im.close()
        geo = ImageGeometry(geo.height or h, geo.width or w, geo.color or first_color, geo.resize, geo.layout)
    sample = geo.sample_shape()
    need = len(paths) * int(np.prod(sample))
    if need > max_bytes:
        raise DatasetError(f"{root}: {len(paths):,} images of shape {sample} need {need:,} bytes, over the "
                           f"limit of {max_bytes:,}")
    try:
        out = np.empty((len(paths), *sample), dtype=np.uint8)
    except MemoryError:
        raise DatasetError(f"{root}: cannot allocate {need:,} bytes for {len(paths):,} images") from None
    from tqdm import tqdm

    bar = tqdm(paths, desc=f"reading {Path(root).name or root}", unit="img", leave=False,
               disable=not progress or len(paths) < 500, dynamic_ncols=True)
    for i, p in enumerate(bar):
        out[i] = _decode(p, geo, max_pixels)
    return out, labels, classes
