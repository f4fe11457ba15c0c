"""Training data: real-data readers, blur-aware cropping, dihedral augmentation and the
deterministic sample stream that feeds the trainer (DESIGN §4).

Every item is a dict of tensors like ``SynthSample.to_tensors()``:
``blur``/``sharp`` float32 [3,H,W] sRGB 0..1, ``mask`` float32 [1,H,W] (1 = blurred),
``trajectory`` float32 [4,H,W] = (o_s dx, o_s dy, o_e dx, o_e dy) in pixels (zeros where
unknown, see ``has_trajectory``), ``is_global`` bool scalar.

Folder layouts
--------------
ReLoBlur: ``<root>/{train,test}/<scene>/<seq>/<id>_sharp.png`` and ``<id>_blur.png``. The
masks live in a parallel tree under ``<root>/masks/`` (or ``mask_root``) that mirrors the
relative path of the blurred image; for ``train/s01/00/000_blur.png`` the reader tries, in
order, ``masks/train/s01/00/000_mask.png``, ``000_blur.png`` and ``000.png`` (the ReLoBlur
release has been redistributed with all three namings). A pixel is blurred where the mask
is > 0 (any channel). A pair without a mask is an error at construction time.

GoPro: ``<root>/<split>/<seq>/{blur,blur_gamma,sharp}/*.png``; pairs are matched by file
name; ``blur`` (default) or ``blur_gamma``; the mask is all ones (global blur).

Determinism
-----------
Sample ``g`` of the stream is a pure function of ``(data seed, g)``: the synthetic sample
is ``SyntheticBlurSource(seed).sample(g)`` and every other random choice (source, real pair,
crop, flip, rotation) comes from ``numpy.random.default_rng([seed, STREAM_TAG, g])``. The
trainer gives rank ``r`` of ``W`` at optimiser step ``s`` the samples
``g = (s * W + r) * B + slot``, so a run resumes exactly without replaying a loader, and a
W-process run with per-process batch B sees the same samples per step as one process with
batch W*B.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..dihedral import View

__all__ = ["ReLoBlurDataset", "GoProDataset", "read_rgb", "read_mask", "blur_aware_crop",
           "augment", "transform_trajectory", "SampleStream", "StepBatchDataset",
           "make_validation_set", "STREAM_TAG"]

STREAM_TAG = 0x4D3241  # separates the stream's own random numbers from the generator's
_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


# --------------------------------------------------------------------------- file reading

def _to_array(im: Image.Image) -> np.ndarray:
    """PIL image -> float32 HxWxC in 0..1 (8- and 16-bit, grey or colour)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        return np.clip(arr, 0.0, 1.0)[..., None]
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def read_rgb(path) -> torch.Tensor:
    """An image file as float32 [3,H,W] in 0..1 (grey is repeated, alpha dropped)."""
    with Image.open(path) as im:
        arr = _to_array(im)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t[:3].contiguous()


def read_mask(path) -> torch.Tensor:
    """A mask file as float32 [1,H,W]: 1 where any channel is > 0."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    return torch.from_numpy((arr > 0).astype(np.float32))[None]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)


def _item(blur, sharp, mask, is_global: bool) -> dict:
    h, w = blur.shape[-2:]
    if sharp.shape != blur.shape or mask.shape[-2:] != (h, w):
        raise ValueError(f"blur {tuple(blur.shape)}, sharp {tuple(sharp.shape)} and mask "
                         f"{tuple(mask.shape)} differ in size")
    return {"blur": blur, "sharp": sharp, "mask": mask,
            "trajectory": torch.zeros(4, h, w), "is_global": torch.tensor(bool(is_global)),
            "has_trajectory": torch.tensor(False)}


class ReLoBlurDataset(torch.utils.data.Dataset):
    """ReLoBlur-layout pairs with masks (see the module docstring for the layout)."""

    MASK_NAMES = ("{id}_mask.png", "{id}_blur.png", "{id}.png")

    def __init__(self, root, split: str = "train", mask_root=None) -> None:
        self.root = Path(root)
        self.split = split
        self.mask_root = Path(mask_root) if mask_root is not None else self.root / "masks"
        base = self.root / split
        if not base.is_dir():
            raise FileNotFoundError(f"ReLoBlur split folder not found: {base}")
        self.pairs: list[tuple[Path, Path, Path]] = []
        missing = []
        for blur in sorted(base.rglob("*_blur.png")):
            ident = blur.name[: -len("_blur.png")]
            sharp = blur.with_name(f"{ident}_sharp.png")
            if not sharp.is_file():
                continue
            rel_dir = blur.parent.relative_to(self.root)
            mask = None
            for pattern in self.MASK_NAMES:
                candidate = self.mask_root / rel_dir / pattern.format(id=ident)
                if candidate.is_file():
                    mask = candidate
                    break
            if mask is None:
                missing.append(str(self.mask_root / rel_dir / self.MASK_NAMES[0].format(id=ident)))
                continue
            self.pairs.append((blur, sharp, mask))
        if missing:
            raise FileNotFoundError(f"{len(missing)} ReLoBlur pairs have no mask, e.g. "
                                    f"{missing[0]} (also tried *_blur.png and <id>.png)")
        if not self.pairs:
            raise FileNotFoundError(f"no ReLoBlur pairs (*_blur.png + *_sharp.png) under {base}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        blur, sharp, mask = self.pairs[i]
        return _item(read_rgb(blur), read_rgb(sharp), read_mask(mask), False)


class GoProDataset(torch.utils.data.Dataset):
    """GoPro-layout pairs (global blur, mask all ones)."""

    def __init__(self, root, split: str = "train", gamma: bool = False) -> None:
        self.root = Path(root)
        self.split = split
        base = self.root / split
        if not base.is_dir():
            raise FileNotFoundError(f"GoPro split folder not found: {base}")
        blur_dir = "blur_gamma" if gamma else "blur"
        self.pairs: list[tuple[Path, Path]] = []
        for seq in sorted(p for p in base.iterdir() if p.is_dir()):
            if not (seq / blur_dir).is_dir() or not (seq / "sharp").is_dir():
                continue
            for blur in _images(seq / blur_dir):
                sharp = seq / "sharp" / blur.name
                if sharp.is_file():
                    self.pairs.append((blur, sharp))
        if not self.pairs:
            raise FileNotFoundError(f"no GoPro pairs (<seq>/{blur_dir}/*.png + <seq>/sharp/) "
                                    f"under {base}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        blur, sharp = self.pairs[i]
        blur_t = read_rgb(blur)
        return _item(blur_t, read_rgb(sharp), torch.ones(1, *blur_t.shape[-2:]), True)


# --------------------------------------------------------------------------- crop / augment

_SPATIAL = ("blur", "sharp", "mask", "trajectory")


def blur_aware_crop(item: dict, size: int, rng: np.random.Generator,
                    blur_prob: float = 0.5) -> dict:
    """Crop ``size`` x ``size``; with probability ``blur_prob`` centre it on a random blurred
    pixel (clamped so the crop stays inside) when the mask has any, else uniform.

    Items smaller than ``size`` are padded (replicate) first. Always draws the same number
    of random values, so later draws do not depend on the mask.
    """
    h, w = item["blur"].shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        item = dict(item)
        for key in _SPATIAL:
            item[key] = F.pad(item[key][None], (0, pw, 0, ph), mode="replicate")[0]
        h, w = item["blur"].shape[-2:]
    centre_on_blur = rng.random() < blur_prob
    pick = rng.random()
    uy, ux = rng.random(), rng.random()
    top, left = int(uy * (h - size + 1)), int(ux * (w - size + 1))
    if centre_on_blur:
        ys, xs = torch.nonzero(item["mask"][0] > 0.5, as_tuple=True)
        if ys.numel():
            j = min(int(pick * ys.numel()), ys.numel() - 1)
            top = int(ys[j]) - size // 2
            left = int(xs[j]) - size // 2
    top = min(max(top, 0), h - size)
    left = min(max(left, 0), w - size)
    out = dict(item)
    for key in _SPATIAL:
        out[key] = item[key][..., top:top + size, left:left + size].contiguous()
    return out


def _augment_view(hflip: bool, rotations: int) -> View:
    """Flipping and then turning ``rotations`` quarter turns, as a :class:`View` (which turns
    first): k turns after a mirror equal -k turns before it."""
    return View((-rotations) % 4 if hflip else rotations % 4, hflip)


def transform_trajectory(trajectory: torch.Tensor, hflip: bool, rotations: int) -> torch.Tensor:
    """Displacement vectors under the same transform as :func:`augment` applies to pixels.

    ``trajectory`` is [4,H,W] (o_s dx, o_s dy, o_e dx, o_e dy); only the vectors are
    changed here, not the pixel layout.
    """
    v = trajectory.reshape(2, 2, *trajectory.shape[-2:])
    return _augment_view(hflip, rotations).vectors_to_view(v).reshape(trajectory.shape)


def augment(item: dict, rng: np.random.Generator, flips: bool = True,
            rotations: bool = True) -> dict:
    """Random element of the dihedral group (horizontal flip, then k quarter turns), applied
    to every image and to the displacement vectors. Always draws two random values."""
    hflip = bool(rng.random() < 0.5) and flips
    k = int(rng.integers(4))
    k = k if rotations else 0
    if not hflip and k == 0:
        return item
    view = _augment_view(hflip, k)
    out = dict(item)
    for key in _SPATIAL:
        out[key] = view.apply(item[key]).contiguous()
    out["trajectory"] = transform_trajectory(out["trajectory"], hflip, k)
    return out


# --------------------------------------------------------------------------- the stream

def degraded_target(sharp: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
    """The sharp image carrying the input's noise and JPEG error.

    Its difference from the input is the clean deblurring residual (sharp - clean blur):
    zero wherever nothing moved, so a network trained on it learns to remove blur and to
    leave the rest of the photo as it is, instead of also denoising it (which it does
    poorly: the bundled default smooths clean sharp inputs to 38.9 dB PSNR).
    """
    return (sharp + degradation).clamp(0.0, 1.0)


@dataclass
class StreamSettings:
    """What :class:`SampleStream` needs (filled from the training config's data section)."""

    seed: int = 0
    crop: int = 128
    render_scale: float = 1.5
    blur_crop_prob: float = 0.5
    flips: bool = True
    rotations: bool = True
    photos: str | None = None
    photo_split: str = "train"
    extra_photos: tuple = ()  # more folders; all their photos join the pool
    target_keeps_degradation: bool = False  # synthetic target = sharp + the input's noise/JPEG
    synthetic: dict | None = None  # SynthParams overrides
    synthetic_weight: float = 1.0
    global_prob: float = 0.5
    max_side: int = 1024
    reloblur: str | None = None
    reloblur_split: str = "train"
    reloblur_masks: str | None = None
    reloblur_weight: float = 1.0
    gopro: str | None = None
    gopro_split: str = "train"
    gopro_gamma: bool = False
    gopro_weight: float = 1.0


def training_photo_paths(settings: StreamSettings) -> list:
    """The photos of ``settings.photo_split`` plus every photo in ``settings.extra_photos``
    (the held-out benchmark names are excluded there too, so a copy cannot leak in)."""
    from ..data.bench import photo_paths

    paths = photo_paths(settings.photos, settings.photo_split)
    for folder in settings.extra_photos:
        paths += photo_paths(folder, "train")
    return paths


class SampleStream:
    """Sample ``g`` of the training stream: a pure function of ``(settings.seed, g)``."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.sources: list[tuple[str, float, object]] = []
        if settings.photos and settings.synthetic_weight > 0:
            from ..data.synthetic import SynthParams, SyntheticBlurSource

            render = max(settings.crop, math.ceil(settings.crop * settings.render_scale))
            params = SynthParams(size=(render, render), global_prob=settings.global_prob)
            if settings.synthetic:
                params = params.replace(**dict(settings.synthetic))
            source = SyntheticBlurSource(training_photo_paths(settings), params, settings.seed,
                                         max_side=settings.max_side)
            self.sources.append(("synthetic", settings.synthetic_weight, source))
        if settings.reloblur and settings.reloblur_weight > 0:
            dataset = ReLoBlurDataset(settings.reloblur, settings.reloblur_split,
                                      settings.reloblur_masks)
            self.sources.append(("reloblur", settings.reloblur_weight, dataset))
        if settings.gopro and settings.gopro_weight > 0:
            dataset = GoProDataset(settings.gopro, settings.gopro_split, settings.gopro_gamma)
            self.sources.append(("gopro", settings.gopro_weight, dataset))
        if not self.sources:
            raise ValueError("no training data: set data.photos (synthetic samples) and/or "
                             "data.reloblur / data.gopro")
        weights = np.array([w for _, w, _ in self.sources], dtype=np.float64)
        self._cumulative = np.cumsum(weights / weights.sum())

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.sources]

    def __call__(self, g: int) -> dict:
        s = self.settings
        rng = np.random.default_rng([s.seed, STREAM_TAG, int(g)])
        which = min(int(np.searchsorted(self._cumulative, rng.random(), side="right")),
                    len(self.sources) - 1)
        name, _, source = self.sources[which]
        if name == "synthetic":
            sample = source.sample(int(g))
            item = sample.to_tensors()
            if s.target_keeps_degradation:
                item["sharp"] = degraded_target(sample.sharp, sample.degradation)
            item["has_trajectory"] = torch.tensor(True)
        else:
            item = source[int(rng.integers(len(source)))]
        item = blur_aware_crop(item, s.crop, rng, s.blur_crop_prob)
        item = augment(item, rng, s.flips, s.rotations)
        item["source"] = torch.tensor(which)
        item["index"] = torch.tensor(int(g))
        return item


class StepBatchDataset(torch.utils.data.Dataset):
    """Map-style view of the stream for one rank: item ``j`` is slot ``j % B`` of step
    ``j // B``, i.e. stream sample ``((j // B) * W + rank) * B + j % B``. Pair it with a
    sampler over ``range(start_step * B, total_steps * B)``."""

    def __init__(self, stream: SampleStream, batch_size: int, world_size: int = 1,
                 rank: int = 0) -> None:
        self.stream = stream
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank

    def global_index(self, j: int) -> int:
        step, slot = divmod(int(j), self.batch_size)
        return (step * self.world_size + self.rank) * self.batch_size + slot

    def __len__(self) -> int:  # only used for repr; the sampler decides what is drawn
        return 2 ** 62

    def __getitem__(self, j: int) -> dict:
        return self.stream(self.global_index(j))


def make_validation_set(photos, count: int, size: int, seed: int, split: str = "train",
                        synthetic: dict | None = None, max_side: int = 1024) -> dict | None:
    """A fixed batch of ``count`` local synthetic samples (no global blur, no crop, no
    augmentation) from the photos of ``split`` with their own ``seed``: stacked tensors
    ``blur``, ``sharp``, ``mask``, ``trajectory``. ``None`` when there are no photos or
    ``count`` is 0."""
    if not photos or count <= 0:
        return None
    from ..data.bench import photo_paths
    from ..data.synthetic import SynthParams, SyntheticBlurSource

    params = SynthParams(size=(size, size))
    if synthetic:
        params = params.replace(**dict(synthetic))
    params = params.replace(size=(size, size), global_prob=0.0, global_every=0)
    source = SyntheticBlurSource(photo_paths(photos, split), params, seed, max_side=max_side)
    items = [source.sample(i).to_tensors() for i in range(count)]
    return {key: torch.stack([it[key] for it in items])
            for key in ("blur", "sharp", "mask", "trajectory")}


def collate(items: Sequence[dict]) -> dict:
    """Stack the tensors of a list of items (the keys of the first item)."""
    return {key: torch.stack([it[key] for it in items]) for key in items[0]}
