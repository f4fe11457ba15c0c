"""Deterministic synthetic local motion blur (DESIGN.md §5).

A sample is made from sharp photographs:

* a static **background** crop of one photo;
* 1-3 **foreground objects**, each a patch of *another* photo cut out with a random soft
  shape (ellipse, smooth radial blob or star-shaped polygon; the alpha is feathered over a
  band of 0.6-2 px and is exactly zero outside that band);
* each object moves during the exposure along a quadratic path
  ``p(t) = a t^2 + b t`` with ``t`` in ``[-1, 1]`` and ``p(0) = 0`` (so the mid-exposure
  frame is the sharp frame), plus a small rotation and scale change about its centre;
* ``N`` (odd, default 17) sub-frames at ``t_n = 2n/(N-1) - 1`` are rendered by bilinear
  backward warping (``grid_sample``) of the premultiplied object and its alpha, and
  composited back to front over the background **in linear light** (exact sRGB transfer
  function); the blurred image is the linear mean of the sub-frames, re-encoded to sRGB.
  The sharp image is the mid-exposure sub-frame through the same path, so zero motion gives
  ``blur == sharp`` bit for bit (pixels whose linear mean equals the mid frame copy the
  sharp value, so untouched background is identical in both images before augmentation).

A share of samples (``SynthParams.global_prob``, or every ``global_every``-th index) is
**global** blur instead: the whole frame moves (camera shake) along a quadratic path with a
small roll; the mask of such a sample is all ones (DESIGN §4).

Conventions
-----------
* Images are float32 torch tensors ``[3, H, W]`` in sRGB, 0..1.
* Displacements are ``(dx, dy)`` in pixels, x to the right, y down. A motion ``T_t`` maps
  the mid-exposure position ``p`` of a scene point to its position at time ``t``:
  ``T_t(p) = c + d(t) + s(t) R(theta(t)) (p - c)``; ``T_0`` is the identity. Rotation angles
  are in degrees, positive = clockwise on screen (because y points down).
* ``trajectory`` is ``[2, 2, H, W]``: ``trajectory[0] = o_s = T_{-1}(p) - p`` (start of the
  exposure minus mid-exposure position), ``trajectory[1] = o_e = T_{+1}(p) - p``; channel 0
  is dx, channel 1 is dy. For a local sample it is the motion of the object that dominates
  the pixel at mid-exposure (visible coverage >= 0.5), zero elsewhere (background, and the
  parts of a motion trail not covered at mid-exposure). For a global sample it is the
  camera motion at every pixel.

Mask rule (local samples)
-------------------------
Objects are composited in list order (the first is the back-most). With ``alpha_k^n(y)``
the warped alpha of object ``k`` in sub-frame ``n`` at pixel ``y``, its *visible coverage*
is ``w_k^n(y) = alpha_k^n(y) * prod_{j > k} (1 - alpha_j^n(y))``. With
``m_k(y) = max_n |T_{k,t_n}(y) - y|`` (the largest displacement from its mid-exposure
position, over the rendered instants, of the object point that sits at ``y`` at
mid-exposure; Euclidean, in pixels)::

    mask(y) = OR_k [ max_n w_k^n(y) > COVERAGE_EPS  and
                     ( max_n w_k^n(y) - min_n w_k^n(y) > COVERAGE_EPS   # coverage changes
                       or m_k(y) >= MOTION_EPS_PX ) ]                  # covered and moving

with ``COVERAGE_EPS = 1e-3`` (absorbs float rounding of bilinear warps of a constant alpha)
and ``MOTION_EPS_PX = 0.5``. Consequences, checked by the tests: a pixel outside the mask
and not covered by an object that moves less than 0.5 px there changes by at most
``2 * K * COVERAGE_EPS`` (linear light) between any sub-frame and the mid frame; an object
hidden behind another for the whole exposure does not mark pixels. Global samples: all ones.
"""
from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .scene_parts import as_chw, random_crop, random_soft_shape, sample_motion, subframe_times
from .scene_render import (COVERAGE_EPS, DOMINANT_COVERAGE, MOTION_EPS_PX, linear_to_srgb,
                           render_scene, srgb_to_linear)
from .synth_types import Motion, RenderDebug, SceneObject, SynthParams, SynthSample

# The generator's parts live in synth_types, scene_parts and scene_render; this module draws
# and writes whole samples and is where callers import the generator from.
__all__ = [
    "COVERAGE_EPS", "DOMINANT_COVERAGE", "GENERATOR_VERSION", "IMAGE_SUFFIXES", "MOTION_EPS_PX",
    "Motion", "RenderDebug", "SceneObject", "SynthParams", "SynthSample",
    "SyntheticBlurDataset", "SyntheticBlurSource", "as_chw", "augment_blur", "cached_photo", "defocus",
    "defocus_background", "disc_kernel", "linear_to_srgb", "list_photos", "load_photo",
    "random_focus_falloff", "read_sample", "render_sample", "render_scene", "srgb_to_linear",
    "to_uint8", "write_dataset",
]
GENERATOR_VERSION = "m2ae-synth-1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


# --------------------------------------------------------------------------------------
# random scenes
# --------------------------------------------------------------------------------------
def disc_kernel(radius: float) -> torch.Tensor:
    """A normalised disc of ``radius`` px (a lens's defocus spread), edge anti-aliased."""
    half = max(1, math.ceil(radius))
    r = torch.arange(-half, half + 1, dtype=torch.float32)
    distance = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    kernel = (radius + 0.5 - distance).clamp(0.0, 1.0)
    return kernel / kernel.sum()


def defocus(image: torch.Tensor, radius: float) -> torch.Tensor:
    """Lens defocus of an sRGB ``[3,H,W]`` image: a disc blur in linear light."""
    kernel = disc_kernel(radius)
    pad = kernel.shape[-1] // 2
    linear = F.pad(srgb_to_linear(image)[:, None], (pad,) * 4, mode="replicate")
    return linear_to_srgb(F.conv2d(linear, kernel[None, None])[:, 0]).clamp(0.0, 1.0)


def random_focus_falloff(rng: np.random.Generator, height: int, width: int,
                         whole_prob: float = 0.5) -> tuple[torch.Tensor, dict]:
    """How far out of focus each pixel is, 0..1 ``[1,H,W]``: the whole frame (with
    probability ``whole_prob``), or a soft ramp across a random direction (a focal plane
    crossing the scene)."""
    whole = rng.random() < whole_prob
    # the ramp is drawn even for a whole frame: a sample uses the same random numbers either way
    angle, centre, softness = rng.uniform(0, 2 * math.pi), rng.uniform(0.25, 0.75), \
        rng.uniform(0.05, 0.4)
    info = {"whole": bool(whole)}
    if whole:
        return torch.ones(1, height, width), info
    cos, sin = math.cos(angle), math.sin(angle)
    ys = torch.linspace(-0.5, 0.5, height)[:, None]
    xs = torch.linspace(-0.5, 0.5, width)[None, :]
    along = (xs * cos + ys * sin) / (abs(cos) + abs(sin)) + 0.5  # 0..1 across the frame
    info.update(angle_deg=round(math.degrees(angle), 2), centre=round(float(centre), 4),
                softness=round(float(softness), 4))
    return ((along - centre) / softness + 0.5).clamp(0.0, 1.0)[None], info


def defocus_background(background: torch.Tensor, params: SynthParams,
                       rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Put part or all of a static background out of focus.

    Why: real photos have soft, sharp-but-defocused backgrounds that a mask predictor
    trained on crisp backgrounds takes for motion blur. Defocus is static, so the mask rule
    is untouched: these pixels stay unmasked and equal in the blurred and sharp images."""
    radius = rng.uniform(*params.defocus_radius)
    falloff, info = random_focus_falloff(rng, *background.shape[-2:],
                                         whole_prob=params.defocus_whole_prob)
    soft = defocus(background, radius)
    info["radius"] = round(float(radius), 4)
    return (background + falloff * (soft - background)).contiguous(), info


def augment_blur(blur: torch.Tensor, params: SynthParams,
                 rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Mild Gaussian noise, then a JPEG round trip, on the blurred image only."""
    use_noise = rng.random() < params.noise_prob
    sigma = rng.uniform(*params.noise_sigma)
    use_jpeg = rng.random() < params.jpeg_prob
    quality = int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1))
    info = {"noise_sigma": float(sigma) if use_noise else 0.0,
            "jpeg_quality": quality if use_jpeg else None}
    if use_noise and sigma > 0:
        noise = rng.standard_normal(tuple(blur.shape), dtype=np.float32)
        blur = (blur + float(sigma) * torch.from_numpy(noise)).clamp(0.0, 1.0)
    if use_jpeg:
        u8 = to_uint8(blur)
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            dec = np.asarray(im.convert("RGB"))
        blur = torch.from_numpy(dec.copy()).permute(2, 0, 1).float() / 255.0
    return blur.contiguous(), info


def render_sample(background, foregrounds: Sequence, params: SynthParams,
                  rng: np.random.Generator, *, is_global: bool | None = None,
                  return_subframes: bool = False) -> SynthSample:
    """Draw and render one random sample.

    ``background``: the photo the background is cropped from; ``foregrounds``: photos the
    objects are cut from (pass the *other* photos; any indexable sequence, accessed lazily).
    Images are numpy/torch arrays (HWC or CHW, uint8 or float 0..1). ``is_global=None``
    draws local vs global with ``params.global_prob``. ``meta['objects'][i]['photo']`` is
    an index into ``foregrounds``.
    """
    height, width = params.size
    if is_global is None:
        is_global = bool(rng.random() < params.global_prob)
    meta: dict = {}
    if is_global:
        camera = sample_motion(rng, params.global_motion_length, params.curvature,
                               params.global_rotation_deg, 0.0)
        margin = _camera_margin(camera, height, width, subframe_times(params.subframes))
        bg = random_crop(background, (height + 2 * margin, width + 2 * margin),
                         params.crop_zoom, rng)
        sample = render_scene(bg, size=(height, width), subframes=params.subframes,
                              camera=camera, return_subframes=return_subframes)
        meta["camera"] = camera.to_dict()
    else:
        if len(foregrounds) == 0:
            raise ValueError("local blur needs at least one foreground photo")
        bg = random_crop(background, (height, width), params.crop_zoom, rng)
        count = int(rng.integers(params.objects[0], params.objects[1] + 1))
        objects, obj_meta = [], []
        for _ in range(count):
            photo_index = int(rng.integers(len(foregrounds)))
            diameter = rng.uniform(*params.object_size) * min(height, width)
            feather = rng.uniform(*params.feather)
            alpha = random_soft_shape(rng, diameter, feather)
            h, w = alpha.shape
            texture = random_crop(foregrounds[photo_index], (h, w), params.crop_zoom, rng)
            cx, cy = rng.uniform(0.1, 0.9) * (width - 1), rng.uniform(0.1, 0.9) * (height - 1)
            top_left = (int(round(cx - (w - 1) / 2)), int(round(cy - (h - 1) / 2)))
            motion = sample_motion(rng, params.motion_length, params.curvature,
                                   params.rotation_deg, params.scale_change)
            objects.append(SceneObject(texture, alpha, top_left, motion))
            obj_meta.append({"photo": photo_index, "top_left": list(top_left),
                             "box": [h, w], "feather": round(float(feather), 4),
                             "motion": motion.to_dict()})
        # Drawn after the objects, and not at all at probability 0, so the objects (and the
        # benchmark) do not depend on it.
        if params.defocus_prob > 0 and rng.random() < params.defocus_prob:
            bg, meta["defocus"] = defocus_background(bg, params, rng)
        sample = render_scene(bg, objects, subframes=params.subframes,
                              return_subframes=return_subframes)
        meta["objects"] = obj_meta
    clean = sample.blur
    sample.blur, aug = augment_blur(clean, params, rng)
    sample.degradation = sample.blur - clean
    meta.update(aug)
    sample.meta = meta
    return sample


def _camera_margin(camera: Motion, height: int, width: int, times) -> int:
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    xs = torch.tensor([0.0, width - 1.0, 0.0, width - 1.0], dtype=torch.float64)
    ys = torch.tensor([0.0, 0.0, height - 1.0, height - 1.0], dtype=torch.float64)
    worst = 0.0
    for t in times:
        px, py = camera.inverse_map(t, xs, ys, centre)
        worst = max(worst, float((px - xs).abs().max()), float((py - ys).abs().max()))
    return int(math.ceil(worst)) + 2


# --------------------------------------------------------------------------------------
# photo folders, datasets, writing
# --------------------------------------------------------------------------------------
def load_photo(path, max_side: int = 1024) -> np.ndarray:
    """Decode an image as uint8 RGB ``[H,W,3]``, EXIF-rotated, long side <= ``max_side``.

    JPEGs are decoded at a reduced DCT scale (``draft``) first, so 6k-pixel photos load
    fast and small."""
    path = Path(path)
    with Image.open(path) as im:
        if im.format == "JPEG" and max(im.size) > max_side:
            s = max_side / max(im.size)
            im.draft("RGB", (math.ceil(im.width * s), math.ceil(im.height * s)))
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8))
        im = im.convert("RGB")
        if max(im.size) > max_side:
            s = max_side / max(im.size)
            new = (max(1, round(im.width * s)), max(1, round(im.height * s)))
            im = im.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(im).copy()


@functools.lru_cache(maxsize=32)
def _load_photo_cached(path: str, mtime_ns: int, size: int, max_side: int) -> np.ndarray:
    return load_photo(path, max_side)


def cached_photo(path, max_side: int = 1024) -> np.ndarray:
    """``load_photo`` through a per-process cache (keyed on path, mtime, size, max_side),
    shared by every source of the process. Do not modify the returned array."""
    path = Path(path).resolve()
    st = path.stat()
    return _load_photo_cached(str(path), st.st_mtime_ns, st.st_size, int(max_side))


def list_photos(folder) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class _LazyPhotos(Sequence):
    def __init__(self, source: "SyntheticBlurSource", indices: list[int]):
        self._source, self._indices = source, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        return self._source.photo(self._indices[i])


class SyntheticBlurSource:
    """Samples from a fixed list of photos; ``sample(index)`` depends only on
    ``(seed, index)`` (``numpy.random.default_rng([seed, index])``), not on call order.

    Photos are decoded on first use (long side <= ``max_side``) and cached as uint8
    (per process, see ``cached_photo``).
    The background photo of a sample is drawn uniformly; its objects come from the other
    photos (from the same photo only when there is a single one).
    """

    def __init__(self, photo_paths: Sequence, params: SynthParams | None = None,
                 seed: int = 0, *, max_side: int = 1024):
        self.paths = [Path(p) for p in photo_paths]
        if not self.paths:
            raise ValueError("SyntheticBlurSource needs at least one photo")
        self.params = params if params is not None else SynthParams()
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.max_side = int(max_side)
        self._cache: dict[int, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.paths]

    def photo(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = cached_photo(self.paths[i], self.max_side)
        return self._cache[i]

    def preload(self) -> "SyntheticBlurSource":
        for i in range(len(self.paths)):
            self.photo(i)
        return self

    def is_global(self, index: int, rng: np.random.Generator) -> bool:
        every = self.params.global_every
        if every > 0:
            return index % every == every - 1
        return bool(rng.random() < self.params.global_prob)

    def sample(self, index: int, *, return_subframes: bool = False) -> SynthSample:
        index = int(index)
        if index < 0:
            raise ValueError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        is_global = self.is_global(index, rng)
        n = len(self.paths)
        bg_index = int(rng.integers(n))
        others = [j for j in range(n) if j != bg_index] or [bg_index]
        sample = render_sample(self.photo(bg_index), _LazyPhotos(self, others), self.params,
                               rng, is_global=is_global, return_subframes=return_subframes)
        sample.meta["background"] = self.paths[bg_index].name
        for obj in sample.meta.get("objects", []):
            obj["photo"] = self.paths[others[obj["photo"]]].name
        sample.meta["index"] = index
        return sample


class SyntheticBlurDataset(torch.utils.data.Dataset):
    """Map-style dataset of ``length`` on-the-fly samples (dicts of tensors, see
    ``SynthSample.to_tensors``). Item ``i`` is source sample
    ``offset + epoch * length + i``; call ``set_epoch`` for fresh samples every epoch."""

    def __init__(self, source: SyntheticBlurSource, length: int, offset: int = 0):
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.source, self.length, self.offset, self.epoch = source, int(length), int(offset), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        index = self.offset + self.epoch * self.length + int(i)
        item = self.source.sample(index).to_tensors()
        item["index"] = torch.tensor(index)
        return item


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` float 0..1 → ``[H,W,3]`` uint8 (round half up after clamping)."""
    arr = (image.clamp(0.0, 1.0) * 255.0 + 0.5).floor().to(torch.uint8)
    return arr.permute(1, 2, 0).contiguous().numpy()


def _name(i: int, digits: int) -> str:
    return f"{i:0{digits}d}"


def write_dataset(source: SyntheticBlurSource, count: int, out_dir, *, start: int = 0,
                  extra: dict | None = None, progress=None) -> dict:
    """Write samples ``start .. start+count-1`` of ``source`` to ``out_dir``.

    Layout: ``blur/NNNN.png``, ``sharp/NNNN.png`` (8-bit RGB, the quantised values),
    ``mask/NNNN.png`` (8-bit grey, 0 or 255), ``trajectory/NNNN.npy`` (float32
    ``[2,2,H,W]``) and ``manifest.json``. Everything is a function of (photos, params,
    seed, indices), so a rewrite is byte-identical. Returns the manifest.
    """
    count = int(count)
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    out = Path(out_dir)
    for sub in ("blur", "sharp", "mask", "trajectory"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(start + count - 1)))
    records = []
    for i in range(start, start + count):
        s = source.sample(i)
        name = _name(i, digits)
        Image.fromarray(to_uint8(s.blur)).save(out / "blur" / f"{name}.png")
        Image.fromarray(to_uint8(s.sharp)).save(out / "sharp" / f"{name}.png")
        Image.fromarray(s.mask.numpy().astype(np.uint8) * 255).save(out / "mask" / f"{name}.png")
        np.save(out / "trajectory" / f"{name}.npy", s.trajectory.numpy().astype(np.float32))
        rec = {"name": name, "index": i, "is_global": bool(s.is_global),
               "mask_fraction": round(s.mask_fraction, 6), "background": s.meta["background"],
               "objects": [o["photo"] for o in s.meta.get("objects", [])],
               "noise_sigma": round(s.meta["noise_sigma"], 6),
               "jpeg_quality": s.meta["jpeg_quality"]}
        records.append(rec)
        if progress is not None:
            progress(i - start + 1, count)
    manifest = {"generator": GENERATOR_VERSION, "seed": source.seed, "start": start,
                "count": count, "digits": digits, "size": list(source.params.size),
                "max_side": source.max_side, "params": source.params.to_dict(),
                "photos": source.names, "samples": records}
    if extra:
        manifest.update(extra)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_sample(folder, name: str | int) -> SynthSample:
    """Read one written sample back (blur/sharp as their quantised values)."""
    folder = Path(folder)
    if not isinstance(name, str):
        manifest = json.loads((folder / "manifest.json").read_text())
        rec = next((r for r in manifest["samples"] if r["index"] == int(name)), None)
        if rec is None:
            raise KeyError(f"no sample with index {name} in {folder}")
        name, is_global = rec["name"], rec["is_global"]
    else:
        is_global = None

    def rgb(sub):
        with Image.open(folder / sub / f"{name}.png") as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0

    with Image.open(folder / "mask" / f"{name}.png") as im:
        mask = torch.from_numpy(np.asarray(im.convert("L")) > 127)
    traj = torch.from_numpy(np.load(folder / "trajectory" / f"{name}.npy"))
    if is_global is None:
        is_global = bool(mask.all())
    return SynthSample(blur=rgb("blur"), sharp=rgb("sharp"), mask=mask, trajectory=traj,
                       is_global=bool(is_global), meta={"name": name})
