"""Reading, writing and converting images and masks for M2AE.

Public API
----------
``read_image(path, max_pixels=MAX_PIXELS) -> PIL.Image.Image | numpy.ndarray``
    Read any Pillow-readable file, fully decoded and EXIF-upright.  16-bit
    colour PNGs (RGB, RGBA, grey+alpha), which Pillow would silently reduce to
    8 bit, are decoded by :mod:`m2ae_core.png16` and returned as a numpy
    uint16 array (H, W, C); everything else is a PIL image in its own mode
    (16-bit greyscale PNGs come back as PIL mode ``I;16``).
``save_image(image, path)``
    Write a PIL image or a uint8/uint16 numpy array atomically.
``to_tensor(image) -> (tensor, ImageMeta)`` / ``from_tensor(tensor, meta)``
    Convert to the model's float32 [B, 3, H, W] 0..1 tensor and back to the
    caller's own kind, dtype, layout, device and alpha.
``mask_to_tensor(mask, height, width, batch=1) -> BoolTensor [B, 1, H, W]``
``image_size(image) -> (H, W)``

Every problem with user input raises :class:`~m2ae_core.errors.ImageInputError`
(a ``ValueError``) with a one-line message saying what is wrong and what to do.

The work is split by job: :mod:`~m2ae_core.image_files` (files),
:mod:`~m2ae_core.image_tensors` (in-memory images <-> tensors) and
:mod:`~m2ae_core.image_masks` (masks); this module is the one place callers import from.
"""

from .image_files import MAX_PIXELS, SAVE_FORMATS, read_image, save_image
from .image_masks import mask_to_tensor
from .image_tensors import ImageLike, ImageMeta, from_tensor, image_size, to_tensor

__all__ = [
    "MAX_PIXELS",
    "SAVE_FORMATS",
    "ImageLike",
    "ImageMeta",
    "read_image",
    "save_image",
    "to_tensor",
    "from_tensor",
    "mask_to_tensor",
    "image_size",
]
