"""M2AE Gradio demo: upload a photo with local motion blur, get it restored.

Thin over ``m2ae_core`` (DESIGN §1): this file reads the upload, calls ``load_model`` once at
start-up and ``deblur`` per request, and formats the results.  No model logic lives here.

Run it:

    python demo/app.py                 # from a checkout, or as app.py of a Hugging Face Space
    m2ae demo                          # the same, through the package's command line

Configuration (command-line options win over environment variables):

    M2AE_MODEL              weights: .safetensors / .pth file, a folder, or a Hub repo id
                            "owner/name" (default: the model bundled with the package)
    M2AE_DEVICE             cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)
    M2AE_DTYPE              auto, fp32, bf16, fp16 (default auto: bf16 on a CPU that computes
                            it natively, AVX512-BF16 or AMX; fp32 elsewhere)
    M2AE_DEMO_MAX_PIXELS    largest accepted image, width * height (default 16,000,000)
    M2AE_DEMO_CONCURRENCY   restorations run at the same time; the rest wait in the queue (1)

The app works offline: with ``HF_HUB_OFFLINE=1`` a Hub id is served from the local cache, and
Gradio's analytics are off unless ``GRADIO_ANALYTICS_ENABLED`` says otherwise.
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # ZeroGPU: imported before torch so it can patch CUDA; a no-op elsewhere
    import spaces
except ImportError:  # not on a Space: run the model call directly
    spaces = None

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from m2ae_core import M2AEError, deblur, load_model  # noqa: E402
from m2ae_core.errors import ImageInputError  # noqa: E402
from m2ae_core.imageio import read_image, save_image  # noqa: E402
from m2ae_core.photo_metadata import read_metadata  # noqa: E402
from m2ae_core.precision import resolve_dtype  # noqa: E402
from m2ae_core.resources import EXAMPLES_DIR, example_images  # noqa: E402
from m2ae_core.visualize import mask_overlay, trajectory_to_rgb  # noqa: E402

DEFAULT_MAX_PIXELS = 16_000_000
DEFAULT_CONCURRENCY = 1
QUEUE_SIZE = 32
MASK_PREVIEW_SIDE = 1600  # the mask editor shows a downscaled copy; masks are resized back
MASK_BRUSH_COLOUR = "#ff3030"
BEST_QUALITY_ENSEMBLE = 8  # views averaged by "Best quality" (deblur's ensemble)

TITLE = "M2AE — local motion deblurring"
INTRO = """\
# M2AE — local motion deblurring
Removes **local** motion blur (a moving subject in front of a still background) and spends
compute only on the blurred pixels: the network predicts a blur mask and the motion of each
blurred pixel, then restores just those pixels. Upload a photo (or pick an example) and press
**Restore**; drag the slider to compare.
"""
MASK_HELP = """\
Paint over the blurred region to choose it yourself: your strokes **replace** the predicted
mask. Leave it empty (or clear it) to use the prediction.
"""

_MODEL = None  # loaded once in main(); module-level so a ZeroGPU worker process can reach it


# --------------------------------------------------------------------------- #
# settings
# --------------------------------------------------------------------------- #
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise SystemExit(f"m2ae demo: {name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"m2ae demo: {name} must be at least 1, got {value}")
    return value


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def on_zero_gpu() -> bool:
    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


# --------------------------------------------------------------------------- #
# image helpers (formatting only; restoration is m2ae_core.deblur)
# --------------------------------------------------------------------------- #
def _payload_path(payload) -> tuple[Path, str] | None:
    """(file on disk, name to show) of a raw Gradio file payload, or None when empty."""
    if payload is None:
        return None
    if isinstance(payload, (str, Path)):
        path = Path(payload)
        return path, path.name
    if isinstance(payload, dict) and payload.get("path"):
        path = Path(payload["path"])
        return path, payload.get("orig_name") or path.name
    return None


def _clean_message(exc: Exception, path: Path, name: str) -> str:
    """m2ae_core's one-line message with the server-side temp path replaced by the file name."""
    return str(exc).replace(str(path), name)


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"
    return stem[:60]


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, or None when Pillow cannot tell."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # unreadable or a decompression bomb: read_image gives the message
        return None


def _pixels(count: int) -> str:
    return f"{count / 1e6:.1f} megapixels" if count >= 1_000_000 else f"{count:,} pixels"


def load_input(path: Path, name: str, max_pixels: int):
    """The upload, upright and full fidelity (PIL, or numpy uint16 for 16-bit PNG), or gr.Error."""
    size = _header_size(path)
    if size and size[0] * size[1] > max_pixels:
        width, height = size
        raise gr.Error(
            f"'{name}' is {width}x{height} = {_pixels(width * height)}; this demo accepts at "
            f"most {_pixels(max_pixels)}. Downscale it, or run M2AE locally (m2ae deblur), "
            "where the limit is 100 megapixels.", title="Image too large")
    try:
        return read_image(path, max_pixels=max_pixels)
    except ImageInputError as exc:
        raise gr.Error(_clean_message(exc, path, name), title="Cannot read the image") from None


def to_display(image) -> Image.Image:
    """8-bit RGB or RGBA PIL copy of a read_image / deblur result, for previews."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        elif array.dtype != np.uint8:
            array = np.clip(np.round(array.astype(np.float64) * 255), 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim == 3 and array.shape[2] == 2:  # grey + alpha
            grey, alpha = array[..., 0], array[..., 1]
            array = np.stack([grey, grey, grey, alpha], axis=-1)
        image = Image.fromarray(array)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8))
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(values * 255), 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")


def mask_from_editor(editor) -> Image.Image | None:
    """The user's strokes from the mask editor's raw payload, or None when nothing is painted.

    Layers with alpha are the strokes (the alpha is the mask); a layer without alpha (a mask
    image sent through the API) is read as white = blurred.  Several layers are united.
    """
    if not isinstance(editor, dict):
        return None
    combined = None
    for layer in editor.get("layers") or []:
        found = _payload_path(layer)
        if found is None:
            continue
        with Image.open(found[0]) as opened:
            im = opened.copy()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            painted = np.asarray(im.convert("RGBA"))[..., 3] >= 128
        else:
            painted = np.asarray(im.convert("L")) >= 128
        if combined is None:
            combined = painted
        else:
            if painted.shape != combined.shape:
                painted = np.asarray(Image.fromarray(painted).resize(
                    combined.shape[::-1], Image.Resampling.NEAREST))
            combined = combined | painted
    if combined is None or not combined.any():
        return None
    return Image.fromarray(combined.astype(np.uint8) * 255, mode="L")


# --------------------------------------------------------------------------- #
# the model call (the only part that needs a GPU)
# --------------------------------------------------------------------------- #
def _gpu_seconds(image, mask, threshold, preserve_sharp, shake_test=True, ensemble=1,
                 progress=None) -> int:
    """ZeroGPU time to reserve: grows with the image and the number of restored copies
    (about 2 s per megapixel and copy, 20..120 s)."""
    width, height = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
    return int(min(120, 20 + 2 * ensemble * width * height / 1e6))


def _gpu(function):
    """``spaces.GPU`` with a size-dependent duration; the function itself off ZeroGPU."""
    if spaces is None:
        return function
    return spaces.GPU(duration=_gpu_seconds)(function)


@_gpu
def run_model(image, mask, threshold: float, preserve_sharp: bool, shake_test: bool = True,
              ensemble: int = 1, progress=None):
    return deblur(_MODEL, image, mask=mask, threshold=threshold, preserve_sharp=preserve_sharp,
                  shake_test=shake_test, ensemble=ensemble, progress=progress)


# --------------------------------------------------------------------------- #
# event handlers (preprocess=False: they get Gradio's raw file payloads)
# --------------------------------------------------------------------------- #
def _stats_markdown(stats: dict, mask: np.ndarray, user_mask: bool) -> str:
    macs, dense = stats.get("macs", 0), stats.get("dense_macs", 0)
    saving = f" — {dense / macs:.1f}x fewer" if macs else ""
    source = "your mask" if user_mask else "the predicted mask"
    return (
        f"**{stats.get('fraction_processed', 1.0):.1%}** of the pixels processed "
        f"({source} covers {float(np.mean(mask)):.1%} of the image) · "
        f"**{macs / 1e9:.2f} GMAC** vs {dense / 1e9:.2f} GMAC dense{saving} · "
        f"**{stats.get('seconds', 0.0):.2f} s** on {stats.get('device', '?')}"
        + (f" · {stats['tiles']} tiles" if stats.get("tiles", 1) > 1 else "")
        + (f" · average of {stats['ensemble']} mirrored / rotated restorations"
           if stats.get("ensemble", 1) > 1 else "")
        + (" · camera shake found: the whole frame was restored"
           if stats.get("camera_shake") else "")
    )


def make_restore(max_pixels: int):
    def restore(image_payload, mask_payload, threshold, preserve_sharp, detect_shake=True,
                best_quality=False, progress=gr.Progress()):
        found = _payload_path(image_payload)
        if found is None:
            raise gr.Error("Upload a photo first (or pick one of the examples).",
                           title="No image")
        path, name = found
        image = load_input(path, name, max_pixels)
        try:
            user_mask = mask_from_editor(mask_payload)
        except (OSError, ValueError) as exc:
            raise gr.Error(f"Cannot read the drawn mask: {exc}", title="Bad mask") from None
        tick = None
        if not on_zero_gpu():  # the ZeroGPU worker is another process: no progress callback
            def tick(done, total):
                progress((done, total), desc="restoring")
        try:
            result = run_model(image, user_mask, float(threshold), bool(preserve_sharp),
                               bool(detect_shake), BEST_QUALITY_ENSEMBLE if best_quality else 1,
                               progress=tick)
        except M2AEError as exc:
            raise gr.Error(_clean_message(exc, path, name)) from None
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
                raise gr.Error("Out of memory for this image; try a smaller one.") from None
            raise

        folder = Path(tempfile.mkdtemp(prefix="m2ae_", dir=gr.utils.get_upload_folder()))
        stem = _safe_stem(name)
        before = to_display(image)
        after_display = to_display(result.image)
        # the pictures made of the photo's pixels keep its colour profile and EXIF, so the
        # browser shows the input and the result in the same colours
        metadata = read_metadata(path)
        restored_path = folder / f"{stem}_restored.png"
        save_image(result.image, restored_path, metadata)  # full resolution, 16-bit stays 16-bit
        before_path = folder / f"{stem}_input.png"
        save_image(before, before_path, metadata)
        after_path = restored_path
        if isinstance(result.image, np.ndarray) or after_display.mode != getattr(
                result.image, "mode", None):
            after_path = folder / f"{stem}_restored_preview.png"
            save_image(after_display, after_path, metadata)
        mask_path = folder / f"{stem}_mask.png"
        save_image(result.mask.astype(np.uint8) * 255, mask_path)
        overlay_path = folder / f"{stem}_mask_overlay.png"
        save_image(mask_overlay(np.asarray(before.convert("RGB")), result.mask), overlay_path,
                   metadata)
        files = [str(restored_path), str(mask_path)]
        trajectory_path = None
        if result.trajectory is not None:
            trajectory_path = folder / f"{stem}_trajectory.png"
            save_image(trajectory_to_rgb(result.trajectory), trajectory_path)
            files.append(str(trajectory_path))

        stats = dict(result.stats)
        stats.update(width=before.width, height=before.height, threshold=float(threshold),
                     preserve_sharp=bool(preserve_sharp), shake_test=bool(detect_shake),
                     user_mask=user_mask is not None,
                     mask_fraction=float(np.mean(result.mask)))
        return ((str(before_path), str(after_path)), str(overlay_path),
                None if trajectory_path is None else str(trajectory_path),
                _stats_markdown(stats, result.mask, user_mask is not None), stats, files)

    return restore


def make_prepare_mask_canvas(max_pixels: int):
    def prepare_mask_canvas(image_payload):
        """Show the uploaded photo (upright, downscaled) in the mask editor, with no strokes."""
        found = _payload_path(image_payload)
        if found is None:
            return None
        path, name = found
        image = to_display(load_input(path, name, max_pixels)).convert("RGB")
        image.thumbnail((MASK_PREVIEW_SIDE, MASK_PREVIEW_SIDE), Image.Resampling.LANCZOS)
        folder = Path(tempfile.mkdtemp(prefix="m2ae_", dir=gr.utils.get_upload_folder()))
        preview = folder / f"{_safe_stem(name)}_mask_canvas.png"
        image.save(preview)
        return {"background": str(preview), "layers": [], "composite": None}

    return prepare_mask_canvas


# --------------------------------------------------------------------------- #
# the page
# --------------------------------------------------------------------------- #
def build_demo(*, max_pixels: int = DEFAULT_MAX_PIXELS, model_note: str = "") -> gr.Blocks:
    """The Blocks app (the model must already be loaded into the module, see main())."""
    with gr.Blocks(title=TITLE, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(INTRO + (f"\n<sub>{model_note}</sub>" if model_note else ""))
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                image_in = gr.Image(label="Blurred photo", type="filepath", image_mode=None,
                                    sources=["upload", "clipboard"], format="png",
                                    height=360, elem_id="input-image")
                with gr.Row():
                    threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05,
                                          label="Mask threshold",
                                          info="blur probability above which a pixel is restored",
                                          elem_id="threshold")
                    preserve_sharp = gr.Checkbox(
                        value=False, label="Preserve sharp pixels",
                        info="keep pixels outside the mask exactly as uploaded",
                        elem_id="preserve-sharp")
                    detect_shake = gr.Checkbox(
                        value=True, label="Detect camera shake",
                        info="restore a photo with no crisp edge as a whole; off for a "
                             "subject on a plain backdrop",
                        elem_id="detect-shake")
                with gr.Row():
                    best_quality = gr.Checkbox(
                        value=False, label=f"Best quality ({BEST_QUALITY_ENSEMBLE}x slower)",
                        info=f"average the restorations of {BEST_QUALITY_ENSEMBLE} mirrored / "
                             "rotated copies: blurred regions a little sharper, the "
                             "background less altered",
                        elem_id="best-quality")
                with gr.Accordion("Draw the blur mask yourself (optional)", open=False,
                                  elem_id="mask-accordion"):
                    gr.Markdown(MASK_HELP)
                    mask_editor = gr.ImageEditor(
                        label="Your blur mask", sources=[], type="filepath", format="png",
                        layers=False, transforms=[], height=360, elem_id="mask-editor",
                        brush=gr.Brush(colors=[MASK_BRUSH_COLOUR], color_mode="fixed"))
                restore_btn = gr.Button("Restore", variant="primary", elem_id="restore")
                gr.Examples(examples=[[str(p)] for p in example_images()], inputs=[image_in],
                            label="Examples (synthetic local blur; click one, then Restore)",
                            cache_examples=False, elem_id="examples")
            with gr.Column(scale=3):
                slider = gr.ImageSlider(label="Before / after (drag to compare)", format="png",
                                        type="filepath", interactive=False,
                                        buttons=["download", "fullscreen"], max_height=560,
                                        elem_id="before-after")
                stats_md = gr.Markdown(elem_id="stats")
                with gr.Row():
                    overlay = gr.Image(label="Blur mask (red = restored)", format="png",
                                       type="filepath", interactive=False, height=300,
                                       buttons=["download", "fullscreen"], elem_id="mask-overlay")
                    trajectory = gr.Image(label="Motion (hue = direction, saturation = speed)",
                                          format="png", type="filepath", interactive=False,
                                          height=300, buttons=["download", "fullscreen"],
                                          elem_id="trajectory")
                files = gr.File(label="Full-resolution downloads (PNG)", file_count="multiple",
                                interactive=False, elem_id="downloads")
                with gr.Accordion("All statistics", open=False):
                    stats_json = gr.JSON(label="stats", elem_id="stats-json")

        # queued (its own, unlimited group) because Gradio 6 shows no error toast for queue=False
        image_in.change(make_prepare_mask_canvas(max_pixels), inputs=image_in,
                        outputs=mask_editor, preprocess=False, concurrency_limit=None,
                        show_progress="minimal", api_visibility="private")
        restore_btn.click(make_restore(max_pixels),
                          inputs=[image_in, mask_editor, threshold, preserve_sharp,
                                  detect_shake, best_quality],
                          outputs=[slider, overlay, trajectory, stats_md, stats_json, files],
                          preprocess=False, api_name="restore", concurrency_id="model")
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="m2ae demo", description="Launch the M2AE Gradio demo (the Hugging Face Space app).")
    parser.add_argument("--model", default=None,
                        help="weights: file, folder or Hub repo id (default: $M2AE_MODEL, else "
                             "the bundled model)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, ... (default: $M2AE_DEVICE, else cuda when available)")
    parser.add_argument("--dtype", default=None,
                        help="auto, fp32, bf16, fp16 (default: $M2AE_DTYPE, else auto: bf16 on a "
                             "CPU that computes it natively, else fp32)")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; "
                             "0.0.0.0 for the local network)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: $GRADIO_SERVER_PORT or the first free from 7860)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help=f"largest accepted image in pixels (default: $M2AE_DEMO_MAX_PIXELS "
                             f"or {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="restorations running at once (default: $M2AE_DEMO_CONCURRENCY or 1)")
    parser.add_argument("--share", action="store_true",
                        help="also open a temporary public gradio.live link (needs internet)")
    return parser.parse_args(argv)


def load_demo_model(source: str | None, device: str | None, dtype: str | None = None):
    """Load the weights once; on failure stop with a message instead of serving a broken page."""
    global _MODEL
    device = device or os.environ.get("M2AE_DEVICE") or default_device()
    dtype = dtype or os.environ.get("M2AE_DTYPE") or "auto"
    try:  # a bad name is the setting's fault, not the model's
        resolve_dtype(dtype, torch.device("cpu"))
    except M2AEError as exc:
        raise SystemExit(f"m2ae demo: cannot start: {exc} (--dtype or M2AE_DTYPE)") from None
    try:
        _MODEL = load_model(source, device=device, dtype=dtype)
    except (M2AEError, ValueError, OSError) as exc:
        where = f"'{source}'" if source else "the bundled default (m2ae_core/weights)"
        raise SystemExit(
            f"m2ae demo: cannot start: no usable model at {where}: {exc}\n"
            "Set M2AE_MODEL (or pass --model) to a .safetensors file, a folder with config.json "
            "+ model.safetensors, or a Hugging Face repo id 'owner/name'.") from None
    return _MODEL


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from m2ae_core.memory import return_freed_memory_promptly

    return_freed_memory_promptly()  # the demo owns its process: low, stable peak memory
    source = args.model or os.environ.get("M2AE_MODEL") or None
    max_pixels = args.max_pixels or _env_int("M2AE_DEMO_MAX_PIXELS", DEFAULT_MAX_PIXELS)
    concurrency = args.concurrency or _env_int("M2AE_DEMO_CONCURRENCY", DEFAULT_CONCURRENCY)
    model = load_demo_model(source, args.device, args.dtype)
    where = getattr(model, "m2ae_source", source or "bundled default")
    param = next(model.parameters())
    precision = str(param.dtype).removeprefix("torch.")
    print(f"m2ae demo: model {where} on {param.device} ({precision}); "
          f"max {max_pixels:,} pixels; concurrency {concurrency}", flush=True)
    shown = (Path(source).name if Path(source).exists() else source) if source else "bundled default"
    demo = build_demo(max_pixels=max_pixels,
                      model_note=f"model: {shown} · {param.device.type} · {precision}")
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    options = dict(server_name=args.host, server_port=args.port, share=args.share or None,
                   allowed_paths=[str(EXAMPLES_DIR)], max_file_size="100mb",
                   footer_links=["api", "gradio"], run_history=False)
    accepted = inspect.signature(demo.launch).parameters  # newer 6.x options only if known
    demo.launch(**{key: value for key, value in options.items() if key in accepted})


if __name__ == "__main__":
    main(sys.argv[1:])
