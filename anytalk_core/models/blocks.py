"""Building blocks shared by the networks of both model families.

Attribute names follow the released face-vid2vid / LivePortrait state dicts (``conv``, ``norm``, ...), so
third-party weights load by prefix rewriting alone.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


KEEP_FP32_UNDER_BF16 = True  # False: those layers run in bf16 too (benchmarks/bench_inference.py compares both)
_SHORTCUTS = True  # see literal_computation


@contextlib.contextmanager
def literal_computation() -> Iterator[None]:
    """Inside, every layer computes as the reference implementation writes it: none of the exact rewrites below
    (convolutions of nearest-upsampled maps at low resolution, SPADE's in-place modulation and folded shortcut,
    per-tap products for few-output convolutions). For comparisons with the reference and for benchmarks."""
    global _SHORTCUTS
    saved, _SHORTCUTS = _SHORTCUTS, False
    try:
        yield
    finally:
        _SHORTCUTS = saved


def inference_shortcuts() -> bool:
    """The rewrites that only inference takes (they run in place or skip the module calls training hooks into)."""
    return _SHORTCUTS and not torch.is_grad_enabled()


def full_precision_under_bf16(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off inside, where it is on with bfloat16 for ``x``'s device: for the few layers whose outputs bf16's
    8-bit mantissa visibly spoils (sampling-grid weights, the output image). Elsewhere, and under fp16, a no-op.

    Inside, layers run in their weights' dtype: give them ``x.to(weight.dtype)``.
    """
    device = x.device.type
    if KEEP_FP32_UNDER_BF16 and torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
        return torch.autocast(device_type=device, enabled=False)
    return contextlib.nullcontext()


class SameBlock2d(nn.Module):
    """Conv, BatchNorm, ReLU (or LeakyReLU 0.01) at the same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.leaky_relu(out) if self.lrelu else F.relu(out)


class DownBlock2d(nn.Module):
    """Conv 3x3, BatchNorm, ReLU, 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), (2, 2))


class DownBlock3d(nn.Module):
    """Conv 3x3x3, BatchNorm, ReLU, average pool (1, 2, 2)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest upsample (1, 2, 2), conv 3x3x3, BatchNorm, ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Folding the kernel costs a pass over 1.8x its weights; it pays off from 8x8 low-res pixels (measured on
        # the full-size hourglass: 1024 -> 512 channels at 2x2 took 175 ms instead of 42, 128 -> 32 at 32x32 17 ms
        # instead of 39).
        if inference_shortcuts() and self.conv.kernel_size == (3, 3, 3) and x.shape[-1] * x.shape[-2] >= 64:
            out = conv3x3_nearest_upsampled(x, self.conv.weight, self.conv.bias, (1, 2, 2))
        else:
            out = self.conv(F.interpolate(x, scale_factor=(1, 2, 2)))
        return F.relu(self.norm(out))


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block: BN, ReLU, conv, BN, ReLU, conv, + input."""

    def __init__(self, features: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv3d(features, features, kernel_size, padding=kernel_size // 2)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def hourglass_widths(block_expansion: int, max_features: int, num_blocks: int) -> list[int]:
    """Channel width at each hourglass level i = 0..num_blocks: ``min(max_features, be * 2**i)``."""
    return [min(max_features, block_expansion * 2 ** i) for i in range(num_blocks + 1)]


class Encoder3d(nn.Module):
    """Hourglass encoder; returns the input and every block's output (finest first)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        widths = hourglass_widths(block_expansion, max_features, num_blocks)
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else widths[i], widths[i + 1]) for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder3d(nn.Module):
    """Hourglass decoder with skip concatenation ``[decoded, skip]`` and a final conv + BN + ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        widths = hourglass_widths(block_expansion, max_features, num_blocks)
        self.up_blocks = nn.ModuleList(
            UpBlock3d((1 if i == num_blocks - 1 else 2) * widths[i + 1], widths[i])
            for i in reversed(range(num_blocks))
        )
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3D U-Net of ``num_blocks`` levels used by the dense motion network."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = Encoder3d(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder3d(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SpectralNormConv2d(nn.Module):
    """Conv2d with spectral normalisation stored as ``weight_orig``, ``weight_u``, ``weight_v``.

    Same state dict and numerics as ``torch.nn.utils.spectral_norm``: in eval the weight is
    ``weight_orig / (u^T W v)`` from the stored vectors; in training one power iteration updates u, v first.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = True, eps: float = 1e-12):
        super().__init__()
        self.padding = padding
        self.eps = eps
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight_orig, a=5 ** 0.5)
        fan_in = in_channels * kernel_size * kernel_size
        if self.bias is not None:
            nn.init.uniform_(self.bias, -fan_in ** -0.5, fan_in ** -0.5)
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0, eps=eps))
        self.register_buffer("weight_v", F.normalize(torch.randn(fan_in), dim=0, eps=eps))
        # Converge u, v to the top singular vectors so an untrained model is already well scaled in eval.
        self.power_iteration(steps=20)

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        w_mat = self.weight_orig.flatten(1)
        for _ in range(steps):
            v = F.normalize(torch.mv(w_mat.t(), self.weight_u), dim=0, eps=self.eps)
            u = F.normalize(torch.mv(w_mat, v), dim=0, eps=self.eps)
            self.weight_u.copy_(u)
            self.weight_v.copy_(v)

    def weight(self) -> torch.Tensor:
        """The spectrally normalised kernel, always computed in the parameters' precision."""
        if self.training:
            self.power_iteration()
        w = self.weight_orig
        with torch.autocast(w.device.type, enabled=False):
            if w.is_contiguous():
                wv = torch.mv(w.flatten(1), self.weight_v)
            else:  # a channels-last kernel is (O, kh, kw, I) in memory: flatten it in that order, and v to match
                wv = torch.mv(w.permute(0, 2, 3, 1).reshape(w.shape[0], -1),
                              self.weight_v.view(w.shape[1:]).permute(1, 2, 0).reshape(-1))
            return w / torch.dot(self.weight_u, wv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


def is_channels_last(x: torch.Tensor) -> bool:
    """True when a 4D tensor is laid out channels-last (and not also contiguous, as 1x1 maps are both)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.instance_norm`` that keeps a channels-last map channels-last (instance norm copies it to contiguous): for
    one image the batch statistics are the instance's own, and batch norm has a channels-last kernel."""
    if not is_channels_last(x):
        return F.instance_norm(x, eps=eps)
    if x.shape[0] == 1:
        return F.batch_norm(x, None, None, training=True, eps=eps)
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    return (x - mean).mul_(torch.rsqrt(var.add_(eps)))


def _phase_offsets(factor: int) -> list[tuple[int, ...]]:
    """For each output phase a of a ``factor``x nearest upsampling, the low-res offsets of taps -1, 0, +1."""
    return [tuple((a + d) // factor for d in (-1, 0, 1)) for a in range(factor)]


def _window_kernel(weight: torch.Tensor, offsets: tuple[int, ...], dim: int) -> tuple[torch.Tensor, int]:
    """Fold the 3 taps along ``dim`` into a window over low-res offsets: (-1, 0) or (0, 1) after an upsampling
    (all offsets lie in one of them), (-1, 0, 1) without one.

    Taps reading the same low-res pixel are summed. Returns the folded kernel and the window's first offset
    + 1: where it starts in a 1-pixel zero-padded input.
    """
    if offsets == (-1, 0, 1):  # an axis that is not upsampled: nothing to fold (and no copy of the weights)
        return weight, 0
    first = min(offsets)
    window = (first, first + 1)
    zero = torch.zeros_like(weight.select(dim, 0))
    parts = [sum((weight.select(dim, tap) for tap, o in enumerate(offsets) if o == u), zero) for u in window]
    return torch.stack(parts, dim=dim), first + 1


def conv3x3_nearest_upsampled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              factor: int | tuple[int, ...]) -> torch.Tensor:
    """``conv(interpolate(x, scale_factor=factor, mode='nearest'), weight, bias, padding=1)`` at low resolution,
    for 2D or 3D maps.

    Along an upsampled axis, output phase a reads at most 2 distinct low-res pixels, so the 3-tap convolution
    equals a 2-tap one at the input's resolution with a kernel per distinct phase class (2 classes for factor 2,
    3 for factor >= 3), whose outputs are interleaved; an axis with factor 1 keeps its 3 taps. In 2D at factor 2
    that is 16 taps instead of 36 per low-res pixel; for the 3D hourglass's (1, 2, 2), 48 instead of 108.
    x (B, C, *n), weight (O, C, 3, ...) -> (B, O, *(f n)); equal up to float rounding.
    """
    dims = x.dim() - 2
    factors = (factor,) * dims if isinstance(factor, int) else tuple(factor)
    b, n = x.shape[0], x.shape[2:]
    o = weight.shape[0]
    phases = [_phase_offsets(f) for f in factors]
    classes = [sorted(set(p)) for p in phases]
    kernels, starts = [weight], [()]
    for axis in range(dims):  # every combination of classes, one axis at a time
        folded = [(_window_kernel(k, c, dim=2 + axis), s) for k, s in zip(kernels, starts) for c in classes[axis]]
        kernels = [k for (k, _), _ in folded]
        starts = [s + (start,) for (_, start), s in folded]
    conv = F.conv2d if dims == 2 else F.conv3d
    padded = F.pad(x, (1, 1) * dims)
    y = conv(padded, torch.cat(kernels), None if bias is None else bias.repeat(len(kernels)))
    y = y.view(b, len(kernels), o, *y.shape[2:])
    # Interleave straight into the output, allocated in x's layout: (b, o, n1, f1, n2, f2) is the row-major
    # layout of (b, o, f1 n1, f2 n2), and (b, n1, f1, n2, f2, o) its channels-last layout.
    interleaved = [size for pair in zip(n, factors) for size in pair]
    if is_channels_last(x):
        out = x.new_empty(b, *interleaved, o).permute(0, 2 * dims + 1, *range(1, 2 * dims + 1))
    else:
        out = x.new_empty(b, o, *interleaved)
    combinations = list(itertools.product(*classes))  # the kernels' order
    for phase in itertools.product(*(range(f) for f in factors)):
        index = combinations.index(tuple(phases[axis][a] for axis, a in enumerate(phase)))
        window = tuple(slice(start, start + size) for start, size in zip(starts[index], n))
        target = tuple(itertools.chain.from_iterable((slice(None), a) for a in phase))  # (:, a1, :, a2, ...)
        out[(slice(None), slice(None)) + target] = y[(slice(None), index, slice(None)) + window]
    return out.view(b, o, *(f * size for f, size in zip(factors, n)))


def conv2d_to_few_channels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv2d(x, weight, bias, padding=k // 2)`` for a wide input and a few outputs, as one matrix product per
    tap followed by shifted sums: oneDNN runs the occlusion head's 1792 -> 1, 7x7 convolution at 15 GMAC/s, ~3.5x
    slower than this. x (B, C, H, W), weight (O, C, k, k), k odd -> (B, O, H, W)."""
    b, c, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    taps = torch.matmul(weight.permute(0, 2, 3, 1).reshape(o * k * k, c), x.reshape(b, c, h * w))
    # A grouped convolution with one-hot kernels adds tap (i, j)'s plane shifted by (i, j) - k // 2.
    select = torch.eye(k * k, dtype=taps.dtype, device=taps.device).repeat(o, 1).view(o, k * k, k, k)
    return F.conv2d(taps.view(b, o * k * k, h, w), select, bias, padding=k // 2, groups=o)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance norm modulated by a segmentation-like map.

    When ``x`` is an integer multiple of the map's size, the map's 3x3 convolution runs at the map's own
    resolution (:func:`conv3x3_nearest_upsampled`), which equals convolving the nearest-upsampled map, and an
    input to be upsampled is normalised before it is upsampled (inference).
    Inside :func:`literal_computation` it computes as the reference writes it.
    """

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

    def modulation_features(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """ReLU(conv3x3(segmap resized to x by nearest))."""
        (h, w), (sh, sw) = x.shape[2:], segmap.shape[2:]
        factor = h // sh
        if _SHORTCUTS and factor > 1 and h == factor * sh and w == factor * sw:
            conv = self.mlp_shared[0]
            return F.relu(conv3x3_nearest_upsampled(segmap, conv.weight, conv.bias, factor),
                          inplace=not torch.is_grad_enabled())
        return self.mlp_shared(F.interpolate(segmap, size=(h, w), mode="nearest"))

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, upsample: int = 1) -> torch.Tensor:
        """``upsample``: normalise and modulate ``x`` nearest-upsampled by this factor."""
        if not inference_shortcuts():  # the literal computation
            if upsample > 1:
                x = F.interpolate(x, scale_factor=upsample)
            actv = self.modulation_features(x, segmap)
            return F.instance_norm(x, eps=1e-5) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)
        out, actv = self._normalised(x, segmap, upsample)
        return self._modulate(out, actv, shift=True)

    def projected(self, x: torch.Tensor, segmap: torch.Tensor, projection: "SpectralNormConv2d",
                  upsample: int = 1) -> torch.Tensor:
        """``projection(self(x, segmap, upsample))`` for a 1x1 ``projection`` without bias. At inference the
        projection, being linear, folds into beta's convolution: P(n(1 + gamma) + beta) = P(n(1 + gamma)) +
        (P beta)(actv), where P beta is one 3x3 convolution to P's O channels instead of C (the learned shortcuts
        project 512 -> 256 and 256 -> 64 channels)."""
        if not inference_shortcuts():
            return projection(self(x, segmap, upsample))
        out, actv = self._normalised(x, segmap, upsample)
        weight = projection.weight()
        matrix, beta = weight.flatten(1), self.mlp_beta
        with torch.autocast(matrix.device.type, enabled=False):  # fold in the weights' precision
            beta_weight = (matrix @ beta.weight.flatten(1)).view(-1, *beta.weight.shape[1:])
            beta_bias = matrix @ beta.bias
        projected = F.conv2d(self._modulate(out, actv, shift=False), weight)
        del out  # the C-channel map goes before beta's O-channel map is made: peak memory as the literal block's
        return projected.add_(F.conv2d(actv, beta_weight, beta_bias, padding=1))

    def _normalised(self, x: torch.Tensor, segmap: torch.Tensor, upsample: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Instance-normalised ``x`` upsampled by ``upsample``, and the modulation features at its size.

        Instance normalisation commutes with nearest upsampling (the same mean and variance), so an upsampled
        input is normalised at its own size and only the result is upsampled: the full-size x never exists.
        """
        out = instance_norm(x)
        if upsample > 1:
            out = F.interpolate(out, scale_factor=upsample)
        return out, self.modulation_features(out, segmap)

    def _modulate(self, out: torch.Tensor, actv: torch.Tensor, shift: bool) -> torch.Tensor:
        """``out * (1 + gamma) (+ beta when shift)`` in place, gamma and beta computed a piece at a time, so
        besides ``out`` and the modulation features no other map is alive at full size."""
        if is_channels_last(out):
            return self._modulate_by_rows(out, actv, shift)
        group = max(1, out.shape[1] // 4)
        for start in range(0, out.shape[1], group):
            sl = slice(start, start + group)
            gamma = F.conv2d(actv, self.mlp_gamma.weight[sl], self.mlp_gamma.bias[sl], padding=1)
            out[:, sl].mul_(gamma.add_(1))
            del gamma
            if shift:
                out[:, sl].add_(F.conv2d(actv, self.mlp_beta.weight[sl], self.mlp_beta.bias[sl], padding=1))
        return out

    def _modulate_by_rows(self, out: torch.Tensor, actv: torch.Tensor, shift: bool, bands: int = 4) -> torch.Tensor:
        """:meth:`_modulate` on channels-last maps, a band of rows at a time: in that layout a band is one
        contiguous block of ``out`` and of ``actv``, where a channel group would be strided. Each band's gamma and
        beta are convolved over the band and its two neighbouring rows."""
        h = out.shape[2]
        step = -(-h // bands)
        for top in range(0, h, step):
            bottom = min(h, top + step)
            first, last = max(top - 1, 0), min(bottom + 1, h)
            # Zero padding stands in for the rows beyond the image; rows beyond the band are read from actv,
            # and the output rows computed from a padded band edge are dropped.
            rows, keep = actv[:, :, first:last], slice(top - first, bottom - first)
            band = out[:, :, top:bottom]
            band.mul_(F.conv2d(rows, self.mlp_gamma.weight, self.mlp_gamma.bias, padding=1)[:, :, keep].add_(1))
            if shift:
                band.add_(F.conv2d(rows, self.mlp_beta.weight, self.mlp_beta.bias, padding=1)[:, :, keep])
        return out


class SPADEResBlock(nn.Module):
    """SPADE residual block with spectral-normalised convolutions and a learned shortcut when widths differ."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128):
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, 3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, 3, padding=1)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, 1, bias=False)
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, upsample: int = 1) -> torch.Tensor:
        """x (B, fin, h, w) -> (B, fout, upsample h, upsample w): the block on x nearest-upsampled by ``upsample``
        (at inference the upsampled x is never made: see :meth:`SPADE.forward`)."""
        inplace = not torch.is_grad_enabled()
        if not inplace and upsample > 1:
            x, upsample = F.interpolate(x, scale_factor=upsample), 1
        shortcut = self.norm_s.projected(x, seg, self.conv_s, upsample) if self.learned_shortcut else None
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg, upsample), 0.2, inplace=inplace))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2, inplace=inplace))
        if shortcut is None:
            shortcut = F.interpolate(x, scale_factor=upsample) if upsample > 1 else x
        return dx.add_(shortcut) if inplace else shortcut + dx


class Unavailable(nn.Module):
    """Stands in for an optional network the checkpoint did not include; calling it explains what is missing."""

    def __init__(self, what: str, fix: str):
        super().__init__()
        self.what, self.fix = what, fix

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError(f"this model has no {self.what} weights; {self.fix}")
