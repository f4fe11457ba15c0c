"""M2AS stage: mask predictor, intra-motion analyzer and mask/motion-aware blocks (DESIGN §2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .deform import MotionDeformConv, deform_conv_rows
from .layers import (Conv1x1, GlobalMax, GlobalMean, LayerNorm2d, NAFBlock, linear_rows,
                     pixel_rows, simple_gate)
from .m2as_banded import StageWorkspace, m2as_block_banded, wants_m2as_bands
from .masked_conv import PrunePlan, masked_conv_dense, masked_gated_conv_pruned


class ContextUnit(nn.Module):
    """Residual LN -> dilated depthwise 3x3 -> 1x1 -> GELU: widens what a pixel sees."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.spatial = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation,
                                 groups=channels)
        self.mix = Conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.mix(self.spatial(self.norm(x))))


class BlurEvidence(nn.Module):
    """Image -> ``channels`` features at stride 4, for the mask predictors only.

    The stage features the predictors read are shaped by restoration; this small stem looks
    at the pixels themselves (3x3 at full resolution, then two stride-2 steps), about
    1 kMAC per input pixel at 32 channels.
    """

    def __init__(self, channels: int, in_channels: int = 3) -> None:
        super().__init__()
        quarter, half = max(channels // 4, 1), max(channels // 2, 1)
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, quarter, 3, padding=1), nn.GELU(),
            nn.Conv2d(quarter, half, 2, stride=2), nn.GELU(),
            nn.Conv2d(half, half, 3, padding=1), nn.GELU(),
            nn.Conv2d(half, channels, 2, stride=2))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)

    @staticmethod
    def at_stride(evidence: torch.Tensor, stride: int) -> torch.Tensor:
        """The stride-4 evidence average-pooled to a coarser stage grid."""
        return F.avg_pool2d(evidence, stride // 4) if stride > 4 else evidence


class MaskPredictor(nn.Module):
    """Per-pixel blur logits (channel 0 = blurred) with half the features pooled globally.

    ``context_units`` > 0 puts that many :class:`ContextUnit` (dilations 1, 2, 4, ...) in
    front, so each pixel's decision sees a neighbourhood (a blur streak), not one pixel.
    ``global_max`` also pools the context half by its maximum, through a zero-initialised
    projection (a model trained without it starts out unchanged). ``evidence_channels`` > 0
    adds :class:`BlurEvidence` features to the input, through another zero-initialised
    projection. ``shake_head`` adds an image-level logit, "the whole frame is blurred"
    (camera shake), read from the pooled mean and max; the per-pixel logits then stand for
    local blur alone and the two combine as a noisy OR (:func:`combine_shake`).
    """

    def __init__(self, channels: int, context_units: int = 0, global_max: bool = False,
                 evidence_channels: int = 0, shake_head: bool = False) -> None:
        super().__init__()
        c = channels
        self.context = nn.Sequential(*[ContextUnit(c, 2 ** i) for i in range(context_units)])
        self.mlp_in = nn.Sequential(Conv1x1(c, c), nn.GELU(), LayerNorm2d(c), Conv1x1(c, c))
        self.mlp_out = nn.Sequential(Conv1x1(c, c // 2), nn.GELU(), Conv1x1(c // 2, c // 4),
                                     nn.GELU(), Conv1x1(c // 4, 2))
        self.pool = GlobalMean()
        self.max_pool = GlobalMax() if global_max else None
        self.max_proj = Conv1x1(c // 2, c // 2, bias=False) if global_max else None
        self.evidence_proj = (Conv1x1(evidence_channels, c, bias=False) if evidence_channels
                              else None)
        for projection in (self.max_proj, self.evidence_proj):
            if projection is not None:
                nn.init.zeros_(projection.weight)
        if shake_head and not global_max:
            raise ValueError("the shake head reads the global max: it needs global_max=True")
        self.shake_head = (nn.Sequential(Conv1x1(c, c // 4), nn.GELU(), Conv1x1(c // 4, 1))
                           if shake_head else None)
        if self.shake_head is not None:
            # starts out saying "no shake" (p ~ 0.02): the combined mask is the local one
            nn.init.constant_(self.shake_head[-1].bias, -4.0)

    def forward(self, features: torch.Tensor, evidence: torch.Tensor | None = None,
                parts: bool = False):
        """Per-pixel logits [B,2,h,w] (channel 0 = blurred), shake already combined in; with
        ``parts``, the per-pixel logits alone and the shake logit [B,1,1,1] (None without a
        shake head)."""
        local, shake = self._predict(features, evidence)
        if parts:
            return local, shake
        return local if shake is None else combine_shake(local, shake)

    def _predict(self, features: torch.Tensor, evidence: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.evidence_proj is not None:
            if evidence is None:
                raise ValueError("this mask predictor needs the image's blur evidence")
            features = features + self.evidence_proj(evidence)
        z = self.mlp_in(self.context(features))
        local, context = z.chunk(2, dim=1)
        pooled_mean = self.pool(context)
        hidden = self.mlp_out[0](torch.cat((local, pooled_mean.expand_as(context)), 1))
        shake = None
        if self.max_proj is not None:
            pooled_max = self.max_pool(context)
            hidden = hidden + self.max_proj(pooled_max)
            if self.shake_head is not None:
                shake = self.shake_head(torch.cat((pooled_mean, pooled_max), 1))
        return self.mlp_out[1:](hidden), shake


def combine_shake(local_logits: torch.Tensor, shake_logit: torch.Tensor) -> torch.Tensor:
    """Logits [B,2,h,w] whose softmax is the noisy OR of the per-pixel blur probability and
    the frame's shake probability: P(sharp) = P(no local blur) * P(no shake), in log space."""
    margin = local_logits[:, :1] - local_logits[:, 1:]
    log_sharp = F.logsigmoid(-margin) + F.logsigmoid(-shake_logit.float()).to(margin.dtype)
    # log(1 - P(sharp)); the clamp keeps a certain "sharp" finite (and its gradient too)
    log_blurred = torch.log(-torch.expm1(log_sharp.clamp(max=-1e-30)))
    return torch.cat((log_blurred, log_sharp), 1)


class MotionAnalyzer(nn.Conv2d):
    """3x3 conv C->4: start (dx, dy) and end (dx, dy) displacement; starts at zero motion."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, 4, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


@dataclass
class StageOutput:
    """What an M2AS stage decided, on its own grid (``scale`` input pixels per grid pixel)."""

    stage: int
    scale: int
    logits: torch.Tensor | None  # [B,2,h,w]; None at inference with a given mask
    probability: torch.Tensor  # [B,1,h,w], blur probability
    mask: torch.Tensor  # [B,1,h,w], the mask used (float in training, bool in eval)
    start: torch.Tensor  # [B,2,h,w], displacement at exposure start (gated if configured)
    end: torch.Tensor  # [B,2,h,w]
    masked_pixels: int = 0  # pixels of the grid through the mask-aware conv (pruned path)
    dilated_pixels: int = 0
    motion: torch.Tensor | None = None  # [B,4,h,w], (start, end) before gating; training only
    # With a shake head: the per-pixel (local blur) logits alone and the frame's shake
    # logit [B,1,1,1]; the combined decision is ``logits``.
    local_logits: torch.Tensor | None = None
    shake_logit: torch.Tensor | None = None

    def at_input(self, grid: torch.Tensor, size: tuple[int, int],
                 mode: str = "nearest") -> torch.Tensor:
        """A map [B,C,h,w] on this stage's grid at input size ``size``: each grid pixel covers
        ``scale`` x ``scale`` pixels of the padded input, and the padding (right and bottom)
        is cropped. A plain resize to ``size`` would stretch the grid over the padding and
        shift the map by up to the padding's width at the far edge."""
        extra = {"align_corners": False} if mode == "bilinear" else {}
        full = F.interpolate(grid.float(), scale_factor=self.scale, mode=mode, **extra)
        return full[..., :size[0], :size[1]]

    def trajectory_at(self, size: tuple[int, int]) -> torch.Tensor:
        """(start, end) [B,4,H,W] in input pixels at input size ``size`` (bilinear)."""
        return self.at_input(torch.cat((self.start, self.end), 1), size, "bilinear") * self.scale


# A channel of the deformable conv is folded into conv4 (M2ASBlock.folded_deform_pruned)
# when |sum of its taps| is at least this share of sum |taps|: dividing by the sum then
# amplifies fp32 rounding at most 500x (~6e-5 of the map's scale). Default-initialised
# weights leave 0.4 % of the channels unfolded.
FOLD_MIN_SHARE = 2e-3


@dataclass
class FoldedConv4:
    """conv4 of an M2AS block with the deformable conv's static affine folded in (inference).

    ``weight`` [2C, C] and ``bias`` give the folded map; ``taps`` / ``kept_bias`` / ``border``
    are the deformable conv's parameters on it. Output channels whose gate pair has an
    unfoldable channel (``unfolded`` [k], their pairs ``pair`` [2k]) still need their affine
    (``pair_scale``, ``pair_bias``) before the gate.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    taps: torch.Tensor
    kept_bias: torch.Tensor
    border: torch.Tensor
    unfolded: torch.Tensor
    pair: torch.Tensor
    pair_scale: torch.Tensor
    pair_bias: torch.Tensor

    def gate_(self, rows: torch.Tensor) -> torch.Tensor:
        """SimpleGate of folded rows [N, 2C] -> [N, C], computed in place into the rows'
        first half (a view is returned): read the folded map before calling this."""
        c = rows.shape[1] // 2
        both = None
        if self.unfolded.numel():  # their outputs still need the affine before the gate
            both = torch.addcmul(self.pair_bias, rows[:, self.pair], self.pair_scale)
        gated = rows[:, :c].mul_(rows[:, c:])
        if both is not None:
            gated[:, self.unfolded] = simple_gate(both)
        return gated


class M2ASBlock(NAFBlock):
    """NAFNet block with a mask-aware first half and a motion-aware deformable second half.

    Same parameters as :class:`NAFBlock` (so NAFNet weights load) plus ``dconv``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.dconv = MotionDeformConv(2 * channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, start: torch.Tensor,
                end: torch.Tensor, plan: PrunePlan | None = None, gated: bool = True,
                prune_conv: bool = False, overwrite_input: bool = False,
                workspace: StageWorkspace | None = None) -> torch.Tensor:
        """Without ``plan``: the dense reference formula everywhere. With it, the trajectory is
        sampled only on the mask (exact when ``gated``), and ``prune_conv`` also restricts the
        mask-aware conv to the mask (eval only: it has no gradient towards the mask).
        ``overwrite_input``: the caller hands ``x`` over, and the result may be written into
        it (large maps at inference: less memory). ``workspace``: where the banded evaluation
        puts its tables (see :class:`~m2ae_core.m2as_banded.StageWorkspace`)."""
        if plan is not None and gated and prune_conv and wants_m2as_bands(x, plan):
            # a large map at inference: in bands, less memory
            return m2as_block_banded(self, x, plan, start, end,
                                     overwrite_input=overwrite_input, workspace=workspace)
        mid = self.masked_spatial_mix(x, mask, plan if prune_conv else None)
        return self.motion_aware_half(mid, start, end, plan, gated, prune_conv)

    def motion_aware_half(self, mid: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                          plan: PrunePlan | None = None, gated: bool = True,
                          prune_conv: bool = False) -> torch.Tensor:
        """Second half with its residual: conv4, the deformable conv, the gate and conv5, by
        the cheapest exact path the arguments allow (see :meth:`forward`)."""
        f5 = None
        if plan is not None and gated and prune_conv and not torch.is_grad_enabled():
            f5 = self.folded_deform_pruned(self.norm2(mid), plan, start, end)
        if f5 is None:
            f4 = self.conv4(self.norm2(mid))
            if plan is not None and gated:
                f5 = self.gated_deform_pruned(f4, plan, start, end)
            else:
                f5 = simple_gate(self.dconv(f4, start, end))
        update = self.conv5(f5)
        del f5  # at inference a view of the 2C-channel folded map: freed before the sum
        return torch.addcmul(mid, self.gamma, update)

    def folded_deform_pruned(self, normed, plan: PrunePlan, start, end) -> torch.Tensor | None:
        """``gated_deform_pruned(conv4(normed), ...)`` with the deformable conv's static
        affine folded into conv4 (inference). Off the mask the deformable conv is the
        per-channel affine ``a * f4 + b`` (a = the sum of the channel's taps): conv4 with its
        rows scaled by ``a`` and bias ``a * bias4 + b`` yields it directly, which leaves a
        plain SimpleGate there, one pass over the map instead of three. On the mask the taps
        read the folded map with weights ``w / a`` (they sum to 1, so ``b`` cancels) and,
        where a tap leaves the image, the folded map's value there, ``b``. A channel whose
        ``|a|`` is too small to divide by stays unfolded; its affine is applied on its own
        column. None for a full mask (the caller's dense path is cheaper)."""
        if plan.masked == plan.total:
            return None
        b, c, h, w = normed.shape
        fold = self.folded_conv4()
        rows = linear_rows(pixel_rows(normed), fold.weight, fold.bias)
        del normed  # not needed any more: one C-channel map less at the stage's peak
        # Everything that reads the folded map comes first: the gate below is computed in
        # place into the map's first half (no C-channel map of its own).
        sampled = None
        if plan.masked:
            sampled = deform_conv_rows(rows, (b, h, w), plan.item, plan.row, plan.col,
                                       start[plan.item, :, plan.row, plan.col],
                                       end[plan.item, :, plan.row, plan.col],
                                       fold.taps, fold.kept_bias, border=fold.border)
        gated = fold.gate_(rows)
        if sampled is not None:
            gated.index_copy_(0, plan.mask_index, simple_gate(sampled).to(gated.dtype))
        return gated.view(b, h, w, c).permute(0, 3, 1, 2)

    def folded_conv4(self) -> "FoldedConv4":
        """conv4 with the deformable conv's static affine folded in (see
        :meth:`folded_deform_pruned`)."""
        taps, bias = self.dconv.weight, self.dconv.bias
        scale = taps.sum(1)
        folded = scale.abs() >= FOLD_MIN_SHARE * taps.abs().sum(1)
        gain = torch.where(folded, scale, torch.ones_like(scale))  # what conv4 absorbs
        folded_bias = torch.where(folded, bias, 0.0)  # ... and the rest keep
        kept_bias = bias - folded_bias
        inner, c = self.conv4.out_channels, self.conv4.in_channels
        unfolded = torch.unique((~folded).nonzero().squeeze(1) % (inner // 2))
        pair = torch.cat((unfolded, unfolded + inner // 2))
        return FoldedConv4(self.conv4.weight.view(inner, c) * gain[:, None],
                           torch.addcmul(folded_bias, self.conv4.bias, gain),
                           taps / gain[:, None], kept_bias, folded_bias, unfolded, pair,
                           (scale / gain)[pair], kept_bias[pair])

    def masked_spatial_mix(self, x: torch.Tensor, mask: torch.Tensor,
                           plan: PrunePlan | None = None) -> torch.Tensor:
        """First half with its residual: the mask-aware conv, pruned when ``plan`` is given."""
        if plan is not None:
            f3 = masked_gated_conv_pruned(self.norm1(x), plan, self.conv1, self.conv2)
        else:
            f3 = simple_gate(masked_conv_dense(self.norm1(x), mask, self.conv1, self.conv2))
        if torch.is_grad_enabled():  # autograd needs f3 itself for the attention's gradient
            return x + self.beta * self.conv3(f3 * self.sca(f3))
        # inference: in place and fused, two C-channel maps fewer alive at once
        return torch.addcmul(x, self.beta, self.conv3(f3.mul_(self.sca(f3))))

    def gated_deform_pruned(self, f4, plan: PrunePlan, start, end) -> torch.Tensor:
        """``simple_gate(dconv(f4, start, end))`` [B,C,H,W] for a gated trajectory, sampled on
        the mask only. Outside it every tap reads the pixel itself, so the deformable conv is a
        per-channel affine, fused with the gate into one pass (no 2C-channel output)."""
        b, c, h, w = f4.shape
        if plan.masked == plan.total:
            return simple_gate(self.dconv(f4, start, end))
        rows = self.dconv.static_gated_rows(f4.permute(0, 2, 3, 1)).reshape(-1, c // 2)
        if plan.masked:
            sampled = deform_conv_rows(pixel_rows(f4), (b, h, w), plan.item, plan.row, plan.col,
                                       start[plan.item, :, plan.row, plan.col],
                                       end[plan.item, :, plan.row, plan.col],
                                       self.dconv.weight, self.dconv.bias)
            # .to: under bf16 autocast (training) the sampled taps come out in bf16
            rows.index_copy_(0, plan.mask_index, simple_gate(sampled).to(rows.dtype))
        return rows.view(b, h, w, c // 2).permute(0, 3, 1, 2)


class M2ASStage(nn.Module):
    """An encoder stage of M2AS blocks sharing one mask predictor and one motion analyzer.

    Blocks are children "0", "1", ... so parameter names match NAFNet's ``encoders.{s}.{b}``.
    """

    def __init__(self, channels: int, blocks: int, stage: int, gate_trajectory: bool = True,
                 mask_context: int = 0, mask_global_max: bool = False,
                 mask_evidence: int = 0, mask_shake_head: bool = False) -> None:
        super().__init__()
        self.stage = stage
        self.gate_trajectory = gate_trajectory
        self.num_blocks = blocks
        for index in range(blocks):
            self.add_module(str(index), M2ASBlock(channels))
        self.mask_predictor = MaskPredictor(channels, mask_context, mask_global_max,
                                            mask_evidence, mask_shake_head)
        self.motion_analyzer = MotionAnalyzer(channels)

    def blocks(self):
        return [getattr(self, str(i)) for i in range(self.num_blocks)]

    def analyze(self, x: torch.Tensor, user_mask: torch.Tensor | None = None,
                threshold: float = 0.5, evidence: torch.Tensor | None = None,
                shaken: torch.Tensor | None = None) -> StageOutput:
        """The stage's decision from its input features (and the image's stride-4
        :class:`BlurEvidence`, when the predictor takes it): blur mask and (gated) trajectory.
        ``shaken`` (bool [B]) marks frames found shaken as a whole: at inference their
        probability is 1 everywhere; in training their mask is (the logits, which the mask
        loss reads, are left alone)."""
        if user_mask is not None and not self.training:
            # A given mask replaces the prediction, so at inference the predictor is not run
            # (its estimate would go unused; ~1 % of the `paper` forward): the "probability"
            # is then the mask itself.
            logits, probability = None, user_mask.to(x.dtype)
            local_logits = shake = None
        else:
            if evidence is not None:
                evidence = BlurEvidence.at_stride(evidence, 2 ** self.stage)
            local_logits, shake = self.mask_predictor(x, evidence, parts=True)
            logits = local_logits if shake is None else combine_shake(local_logits, shake)
            probability = torch.softmax(logits, dim=1)[:, :1]
            if shaken is not None and not self.training:
                probability = torch.where(shaken.view(-1, 1, 1, 1).to(probability.device),
                                          torch.ones_like(probability), probability)
        if user_mask is not None:
            mask = user_mask if not self.training else user_mask.to(x.dtype)
        elif self.training:
            mask = F.gumbel_softmax(logits, tau=1.0, hard=True, dim=1)[:, :1]
            if shaken is not None:  # the restoration trains on the masks inference will use
                mask = torch.where(shaken.view(-1, 1, 1, 1).to(mask.device),
                                   torch.ones_like(mask), mask)
        else:
            mask = probability > threshold
        motion = self.motion_analyzer(x)
        start, end = motion[:, :2], motion[:, 2:]
        if self.gate_trajectory:
            gate = mask.to(x.dtype)
            start, end = start * gate, end * gate
        masked = int((mask > 0.5).sum())
        # the ungated motion only feeds the training loss: not kept at inference
        return StageOutput(self.stage, 2 ** self.stage, logits, probability, mask, start, end,
                           masked, masked, motion if self.training else None,
                           local_logits if shake is not None else None, shake)

    def forward(self, x: torch.Tensor, user_mask: torch.Tensor | None = None,
                threshold: float = 0.5, pruned: bool = False,
                evidence: torch.Tensor | None = None,
                shaken: torch.Tensor | None = None,
                overwrite_input: bool = False) -> tuple[torch.Tensor, StageOutput]:
        """``overwrite_input``: the caller hands ``x`` over; the blocks may write into it."""
        if pruned and self.training:
            raise RuntimeError("pruned evaluation needs eval mode (a binary mask)")
        info = self.analyze(x, user_mask, threshold, evidence, shaken)
        # Training samples the gated trajectory only on the mask too: same values as the dense
        # path; it drops only the gradient towards switching on unmasked pixels through the
        # trajectory (the mask-aware conv and L_mask still carry it), and saves ~1/3 of a step.
        plan = PrunePlan.from_mask(info.mask > 0.5) if pruned or self.training else None
        # The blocks share one plan and trajectory: at inference they share their tables too.
        # Pruned `paper` stage-4 block at 2152x1436 in the network, 5 / 10 / 25 / 50 % masked:
        # 105 / 116 / 140 / 190 -> 102 / 111 / 134 / 172 ms (session 22,
        # docs/results/workspace-s22/).
        workspace = StageWorkspace() if pruned and not torch.is_grad_enabled() else None
        for index, block in enumerate(self.blocks()):
            # each block's output is the stage's own: the next block may overwrite it
            x = block(x, info.mask, info.start, info.end, plan, self.gate_trajectory, pruned,
                      overwrite_input=overwrite_input or index > 0, workspace=workspace)
        if plan is not None:
            info.dilated_pixels = plan.dilated
        return x, info
