"""The M2AE nodes (ComfyUI V3 schema API). Thin: check inputs, call ``m2ae_core``, format outputs.

ComfyUI conventions: IMAGE is a float tensor [B,H,W,C] in 0..1, MASK a float tensor [B,H,W].
Each batch item goes through :func:`m2ae_core.deblur` on its own (memory stays that of one
image); progress is reported per tile (a tiled image is run twice, see ``tile_context``) and
the run stops at the next tile when the user cancels.

Node classes never inherit from one another: ComfyUI caches a node's schema on its class, so a
subclass would reuse its parent's outputs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from typing_extensions import override

import comfy.model_management as model_management
import comfy.utils
from comfy_api.latest import ComfyExtension, io
from m2ae_core import DeblurResult, M2AEError, analyze, deblur
from m2ae_core.inference import TILE_CONTEXTS
from m2ae_core.self_ensemble import ENSEMBLE_SIZES
from m2ae_core.tiling import MIN_TILE, memory_to_free, untiled_bytes_per_pixel
from m2ae_core.visualize import trajectory_to_rgb

from . import models
from .models import M2AEModel

CATEGORY = "M2AE"
MAX_TILE = 16384
# the node's choice -> deblur's ensemble size (words read better than numbers in a combo)
SELF_ENSEMBLE = {("off" if n == 1 else f"x{n}"): n for n in ENSEMBLE_SIZES}

M2AEModelType = io.Custom("M2AE_MODEL")
M2AETrajectoryType = io.Custom("M2AE_TRAJECTORY")


@dataclass(frozen=True)
class M2AETrajectory:
    """What the ``M2AE_TRAJECTORY`` type carries: the per-pixel exposure trajectory.

    ``start`` and ``end``: float32 [B,2,H,W], the displacement (dx, dy) in input pixels of the
    first and last instant of the exposure relative to the mid-exposure frame (the path between
    them is the quadratic of the paper). ``mask``: bool [B,H,W], the pixels found blurred (the
    trajectory is zero elsewhere). ``probability``: float32 [B,H,W].
    """

    start: torch.Tensor
    end: torch.Tensor
    mask: torch.Tensor
    probability: torch.Tensor

    @property
    def displacement(self) -> torch.Tensor:
        """end - start, [B,2,H,W]: the motion during the exposure."""
        return self.end - self.start


# --------------------------------------------------------------------------- shared inputs

def _model_input() -> io.Input:
    return M2AEModelType.Input("m2ae_model", tooltip="An M2AE model from 'Load M2AE Model'.")


def _image_input(tooltip: str = "The photo(s) to analyse, a batch is processed one image at "
                                "a time.") -> io.Input:
    return io.Image.Input("image", tooltip=tooltip)


def _threshold_input() -> io.Input:
    return io.Float.Input(
        "threshold", default=0.5, min=0.0, max=1.0, step=0.01,
        tooltip="Blur probability above which a pixel counts as blurred. Lower it to catch "
                "faint blur, raise it to process fewer pixels.")


def _shake_input() -> io.Input:
    return io.Boolean.Input(
        "detect_camera_shake", default=True, optional=True,
        tooltip="Models with a camera-shake test (the bundled default) mark a whole photo as "
                "blurred when it has almost no crisp edge. Turn off for a subject moving in "
                "front of a plain, featureless backdrop.")


def _ensemble_input(tooltip: str) -> io.Input:
    return io.Combo.Input("self_ensemble", options=list(SELF_ENSEMBLE), default="off",
                          optional=True, tooltip=tooltip)


def _ensemble_size(choice) -> int:
    if choice not in SELF_ENSEMBLE:
        raise M2AEError(f"M2AE: self_ensemble must be one of {', '.join(SELF_ENSEMBLE)}, "
                        f"got {choice!r}")
    return SELF_ENSEMBLE[choice]


# --------------------------------------------------------------------------- helpers

def _check_image(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise M2AEError(f"M2AE: expected a ComfyUI IMAGE (a [B,H,W,3] tensor), got {shape}; "
                        "connect the IMAGE output of a node such as Load Image")
    if image.shape[0] == 0:
        raise M2AEError("M2AE: the image batch is empty")
    return image


def _split_mask(mask, batch: int) -> list | None:
    """One mask per batch item from a ComfyUI MASK ([H,W], [B,H,W] or [B,1,H,W])."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4) or \
            (mask.ndim == 4 and mask.shape[1] != 1):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise M2AEError(f"M2AE: expected a ComfyUI MASK (a [B,H,W] tensor), got {shape}")
    if mask.ndim == 4:
        mask = mask[:, 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape[0] == 1:
        return [mask[0]] * batch
    if mask.shape[0] != batch:
        raise M2AEError(f"M2AE: the mask batch has {mask.shape[0]} masks but the image batch has "
                        f"{batch} images; connect one mask, or one mask per image")
    return [mask[i] for i in range(batch)]


def room_to_make(m: M2AEModel, image: torch.Tensor, tile: int | None) -> int:
    """Bytes of GPU memory to ask ComfyUI for before a run: the weights plus what deblur's
    automatic tiling needs free to choose as it would on the whole device."""
    per_pixel = untiled_bytes_per_pixel(m.network.config.width, m.dtype)
    return model_management.module_size(m.network) + memory_to_free(
        tile, image.shape[1], image.shape[2], per_pixel,
        model_management.get_total_memory(m.device))


def _make_room(m: M2AEModel, image: torch.Tensor, tile: int | None) -> None:
    """Ask ComfyUI to unload other models if the run needs the GPU memory they take."""
    if m.device.type == "cpu":
        return
    model_management.free_memory(room_to_make(m, image, tile), m.device)


def run_deblur(m: M2AEModel, image: torch.Tensor, *, mask=None, threshold: float = 0.5,
               preserve_sharp: bool = False, tile: int | None = None,
               tile_context: str = "image", maps_only: bool = False,
               shake_test: bool = True, ensemble: int = 1) -> list[DeblurResult]:
    """``m2ae_core.deblur`` on each batch item, with ComfyUI's progress bar and cancel button.

    ``maps_only``: ``m2ae_core.analyze`` instead (mask, probability, trajectory; no restore).
    ``shake_test``, ``ensemble``: as in ``m2ae_core.deblur``.
    """
    if not isinstance(m, M2AEModel):
        raise M2AEError("M2AE: the m2ae_model input must come from a 'Load M2AE Model' node")
    image = _check_image(image)
    batch = image.shape[0]
    masks = _split_mask(mask, batch)
    pbar = comfy.utils.ProgressBar(batch)
    network = m.network
    _make_room(m, image, tile)
    network.to(m.device)
    results = []
    try:
        for item in range(batch):
            model_management.throw_exception_if_processing_interrupted()

            def progress(done: int, total: int, item: int = item) -> None:
                pbar.update_absolute(item * total + done, batch * total)
                model_management.throw_exception_if_processing_interrupted()

            item_mask = None if masks is None else masks[item]
            with torch.inference_mode():
                if maps_only:
                    results.append(analyze(network, image[item:item + 1], mask=item_mask,
                                           threshold=float(threshold), tile=tile,
                                           tile_context=tile_context, progress=progress,
                                           shake_test=bool(shake_test), ensemble=ensemble))
                else:
                    results.append(deblur(network, image[item:item + 1], mask=item_mask,
                                          threshold=float(threshold), pruned=True,
                                          preserve_sharp=bool(preserve_sharp), tile=tile,
                                          tile_context=tile_context, progress=progress,
                                          shake_test=bool(shake_test), ensemble=ensemble))
    finally:
        if m.offload_device != m.device:
            network.to(m.offload_device)
            model_management.soft_empty_cache()
    return results


def _masks(results: list[DeblurResult], field: str) -> torch.Tensor:
    """[B,H,W] float32 MASK from the per-item numpy maps of the results."""
    return torch.stack([torch.from_numpy(np.asarray(getattr(r, field), dtype=np.float32))
                        for r in results])


def _images(results: list[DeblurResult]) -> torch.Tensor:
    return torch.cat([r.image for r in results], dim=0)


# --------------------------------------------------------------------------- nodes

class M2AELoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        options = models.model_options()
        return io.Schema(
            node_id="M2AELoadModel",
            display_name="Load M2AE Model",
            category=CATEGORY,
            description="Loads M2AE local-motion-deblurring weights. Files come from ComfyUI's "
                        "models/m2ae folder (.safetensors only); 'm2ae_default (bundled)' is the "
                        "model shipped with the node pack. Loaded weights are cached.",
            inputs=[
                io.Combo.Input(
                    "model_name", options=options, default=models.BUNDLED,
                    tooltip="Weights to load: the bundled default, or a .safetensors file placed "
                            "in ComfyUI/models/m2ae (press R to refresh the list after adding "
                            "one)."),
                io.Combo.Input(
                    "device", options=models.DEVICES, default="auto",
                    tooltip="Where the model runs. auto = ComfyUI's device (the GPU, or the CPU "
                            "when ComfyUI runs with --cpu)."),
                io.Combo.Input(
                    "dtype", options=models.DTYPES, default="auto",
                    tooltip="Precision. auto = bf16 on a CPU that computes it natively "
                            "(AVX512-BF16 or AMX: 1.3-1.8x faster, results within 0.01 dB), "
                            "else fp32 (GPUs too). fp16/bf16 on request: faster on GPUs, "
                            "approximate; fp16 is slow on CPUs."),
            ],
            outputs=[M2AEModelType.Output("m2ae_model", display_name="m2ae_model",
                                          tooltip="The loaded model, for the other M2AE nodes.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_name, device, dtype):
        # a file replaced under the same name is loaded again
        return (models.file_stamp(model_name), device, dtype)

    @classmethod
    def execute(cls, model_name, device, dtype) -> io.NodeOutput:
        return io.NodeOutput(models.load(model_name, device, dtype))


class M2AEPredictBlurMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="M2AEPredictBlurMask",
            display_name="M2AE Predict Blur Mask",
            category=CATEGORY,
            description="Finds the locally motion-blurred pixels of each image: a full-resolution "
                        "MASK (1 = blurred) and the blur probability (0..1) as a second MASK. "
                        "Grow, blur or edit the mask with ComfyUI's mask nodes and feed it to "
                        "M2AE Pruned Deblur.",
            inputs=[_model_input(), _image_input(), _threshold_input(), _shake_input(),
                    _ensemble_input("Also predict on mirrored / rotated copies: the mask is their "
                                    "majority, the probability their mean (a cleaner mask, at 2, "
                                    "4 or 8 times the time)")],
            outputs=[
                io.Mask.Output("mask", display_name="mask",
                               tooltip="1 where the probability exceeds the threshold."),
                io.Mask.Output("probability", display_name="probability",
                               tooltip="Blur probability per pixel, 0..1."),
            ],
        )

    @classmethod
    def execute(cls, m2ae_model, image, threshold, detect_camera_shake=True,
                self_ensemble="off") -> io.NodeOutput:
        ensemble = _ensemble_size(self_ensemble)
        results = run_deblur(m2ae_model, image, threshold=threshold, maps_only=True,
                             shake_test=detect_camera_shake, ensemble=ensemble)
        return io.NodeOutput(_masks(results, "mask"), _masks(results, "probability"))


class M2AEEstimateTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="M2AEEstimateTrajectory",
            display_name="M2AE Estimate Trajectory",
            category=CATEGORY,
            description="Estimates the per-pixel motion during the exposure. The image shows it "
                        "on a colour wheel (hue = direction, saturation = length; white = no "
                        "motion, one scale for the whole batch); the M2AE_TRAJECTORY output "
                        "carries the start/end displacement maps in pixels.",
            inputs=[_model_input(), _image_input(), _threshold_input(), _shake_input()],
            outputs=[
                io.Image.Output("trajectory_image", display_name="trajectory_image",
                                tooltip="Colour-wheel picture of the motion, input resolution."),
                M2AETrajectoryType.Output(
                    "trajectory", display_name="trajectory",
                    tooltip="start/end (dx, dy) maps [B,2,H,W] in pixels, with the mask."),
            ],
        )

    @classmethod
    def execute(cls, m2ae_model, image, threshold, detect_camera_shake=True) -> io.NodeOutput:
        if isinstance(m2ae_model, M2AEModel) and not m2ae_model.has_trajectory:
            raise M2AEError(f"M2AE: '{m2ae_model.name}' is a plain NAFNet backbone without the "
                            "motion-aware stage, so it estimates no trajectory; load an M2AE "
                            "model (such as the bundled default)")
        results = run_deblur(m2ae_model, image, threshold=threshold, maps_only=True,
                             shake_test=detect_camera_shake)
        trajectory = torch.stack([torch.from_numpy(np.asarray(r.trajectory, np.float32))
                                  for r in results])  # [B,2,2,H,W]
        motion = torch.linalg.vector_norm(trajectory[:, 1] - trajectory[:, 0], dim=1)
        scale = max(1.0, float(motion.max()))
        pictures = [torch.from_numpy(trajectory_to_rgb(t.numpy(), max_magnitude=scale))
                    for t in trajectory]
        picture = torch.stack(pictures).to(torch.float32) / 255.0
        payload = M2AETrajectory(start=trajectory[:, 0].contiguous(),
                                 end=trajectory[:, 1].contiguous(),
                                 mask=_masks(results, "mask") > 0.5,
                                 probability=_masks(results, "probability"))
        return io.NodeOutput(picture, payload)


class M2AEPrunedDeblur(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="M2AEPrunedDeblur",
            display_name="M2AE Pruned Deblur",
            category=CATEGORY,
            description="Removes local motion blur, computing only on the blurred pixels. The "
                        "blur mask is predicted, or taken from the optional mask input (any "
                        "resolution; e.g. painted in the mask editor or made with ComfyUI's "
                        "mask nodes). Outputs the restored image and the mask used.",
            inputs=[
                _model_input(),
                _image_input("The blurred photo(s); a batch is processed one image at a time."),
                _threshold_input(),
                io.Boolean.Input(
                    "preserve_sharp", default=False,
                    tooltip="Keep the input pixels outside the (feathered) mask exactly as they "
                            "were; inside a predicted mask, keep more of the input where the "
                            "blur probability is low."),
                io.Int.Input(
                    "tile_size", default=0, min=0, max=MAX_TILE, step=16,
                    tooltip=f"0 = automatic (tiles only when the whole image would need more than "
                            f"half the memory the device has free); otherwise process "
                            f"overlapping tiles of this many pixels (at least {MIN_TILE}) to "
                            f"save memory."),
                io.Mask.Input(
                    "mask", optional=True,
                    tooltip="Optional: the pixels to restore (white = blurred). Replaces the "
                            "predicted mask; one mask for the batch or one per image."),
                io.Combo.Input(
                    "tile_context", options=list(TILE_CONTEXTS), default="image",
                    optional=True,
                    tooltip="Tiled images only. image: every tile sees the whole image's "
                            "pooled statistics, as untiled (two passes, about twice the "
                            "time); tile: each tile its own (one pass, tiles may differ "
                            "slightly)."),
                _shake_input(),
                _ensemble_input("Also restore mirrored / rotated copies and average them: "
                                "blurred regions a little sharper, the background less "
                                "altered, at 2, 4 or 8 times the time."),
            ],
            outputs=[
                io.Image.Output("restored", display_name="image",
                                tooltip="The restored image(s)."),
                io.Mask.Output("mask_used", display_name="mask",
                               tooltip="The mask that was processed."),
            ],
        )

    @classmethod
    def validate_inputs(cls, tile_size=None) -> bool | str:
        if tile_size is None:  # linked from another node: checked when the node runs
            return True
        if not isinstance(tile_size, int) or 0 < tile_size < MIN_TILE or tile_size > MAX_TILE:
            return (f"tile_size must be 0 (automatic) or between {MIN_TILE} and {MAX_TILE} "
                    f"pixels, got {tile_size}")
        return True

    @classmethod
    def execute(cls, m2ae_model, image, threshold, preserve_sharp, tile_size,
                mask=None, tile_context="image", detect_camera_shake=True,
                self_ensemble="off") -> io.NodeOutput:
        message = cls.validate_inputs(tile_size)
        if message is not True:
            raise M2AEError(f"M2AE: {message}")
        if isinstance(mask, torch.Tensor) and mask.numel() and float(mask.max()) < 0.5:
            logging.warning("M2AE Pruned Deblur: the mask input is empty (no pixel >= 0.5), so "
                            "nothing is restored; paint the blurred area in the mask editor or "
                            "disconnect the mask to use the predicted one")
        ensemble = _ensemble_size(self_ensemble)
        results = run_deblur(m2ae_model, image, mask=mask, threshold=threshold,
                             preserve_sharp=preserve_sharp, tile=tile_size or None,
                             tile_context=tile_context, shake_test=detect_camera_shake,
                             ensemble=ensemble)
        return io.NodeOutput(_images(results), _masks(results, "mask"))


NODES: list[type[io.ComfyNode]] = [M2AELoadModel, M2AEPredictBlurMask, M2AEEstimateTrajectory,
                                   M2AEPrunedDeblur]


class M2AEExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> M2AEExtension:
    return M2AEExtension()
