"""The inference engine: chunking, precision modes, progress/cancel, agreement with the plain path."""
from __future__ import annotations

import pytest
import torch

from anytalk_core import engine as engine_module
from anytalk_core.engine import Engine, EngineConfig, EngineInterrupted, resolve_precision, smooth_motion
from anytalk_core.models.blocks import literal_computation
from anytalk_core.models.config import tiny_config
from anytalk_core.models.registry import build_model
from anytalk_core.stages import animate_clip


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config(with_discriminator=False)).eval()


@pytest.fixture(scope="module")
def clip():
    g = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, 64, 64, generator=g), torch.rand(11, 3, 64, 64, generator=g)


def run(model, clip, **config) -> torch.Tensor:
    source, driving = clip
    return torch.cat(list(animate_clip(Engine(model, EngineConfig(device="cpu", **config)), source, driving)))


def test_chunk_size_does_not_change_results(model, clip):
    reference = run(model, clip, chunk_size=1)
    assert reference.shape == (11, 3, 64, 64)
    for chunk in (2, 5, 11, 64):
        assert (run(model, clip, chunk_size=chunk) - reference).abs().max() <= 1e-5
    for chunk in (3, 11):  # batched decoding (the GPU default) agrees within float rounding
        assert (run(model, clip, chunk_size=chunk, batch_frames=True) - reference).abs().max() <= 1e-4


def test_engine_matches_the_plain_reference_path(model, clip):
    source, driving = clip
    with literal_computation(), torch.no_grad():
        plain = torch.cat([model.decode(*_plain_inputs(model, source, driving, i))["prediction"]
                           for i in range(driving.shape[0])])
    assert (run(model, clip, chunk_size=4) - plain).abs().max() <= 1e-4


def _plain_inputs(model, source, driving, i):
    """The reference demo's per-frame work: source recomputed, frame i's motion, relative to frame 0."""
    with torch.no_grad():
        state = model.prepare_source(source)
        motion = model.estimate_motion(driving)
        kp = model.driven_keypoints(state, motion)[i:i + 1]
        return model.encode_appearance(source), kp, state.keypoints


@pytest.mark.parametrize("precision,max_tol,mean_tol", [("bf16", 0.08, 0.01), ("fp16", 0.02, 0.003)])
def test_reduced_precision_agrees_with_fp32(model, clip, precision, max_tol, mean_tol):
    reference = run(model, clip, chunk_size=4)
    source, driving = clip
    engine = Engine(model, EngineConfig(device="cpu", precision=precision, chunk_size=4))
    got = torch.cat(list(animate_clip(engine, source, driving[:3])))
    err = (got - reference[:3]).abs()
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert err.max() <= max_tol and err.mean() <= mean_tol


def test_bf16_keeps_the_dense_motion_heads_and_the_image_in_fp32(model, clip):
    """Under bf16 autocast the sampling grid's weights (mask), the deformation, the occlusion and the image are fp32,
    while the bulk of the networks runs in bf16; under fp16 and fp32 nothing changes."""
    source, driving = clip
    with torch.no_grad():
        state = model.prepare_source(source)
        kp = model.driven_keypoints(state, model.estimate_motion(driving[:1]))
        seen = {}
        hook = model.dense_motion.hourglass.register_forward_hook(lambda m, i, o: seen.update(hourglass=o.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.decode(state.volume, kp, state.keypoints)
        hook.remove()
    assert seen["hourglass"] == torch.bfloat16
    assert {name: out[name].dtype for name in ("mask", "deformation", "occlusion_map", "prediction")} == \
        dict.fromkeys(("mask", "deformation", "occlusion_map", "prediction"), torch.float32)
    # the image layer's fp32 pass spares bf16's ~1/256 steps near white: no grey-level quantisation of the output
    reference = run(model, (source, driving[:3]))
    got = run(model, (source, driving[:3]), precision="bf16")
    assert float(10 * torch.log10(1 / ((got - reference) ** 2).mean())) >= 40


def test_auto_precision_is_bf16_only_on_cpus_with_bf16_instructions(model, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine_module, "cpu_bf16_support", lambda: ["avx512_bf16"])
    assert resolve_precision("auto", cpu) == ("bf16", "auto: this CPU has avx512_bf16")
    assert Engine(model, EngineConfig(device="cpu", precision="auto")).dtype == torch.bfloat16
    assert resolve_precision("fp32", cpu) == ("fp32", "asked for")
    assert resolve_precision("auto", torch.device("cuda")) == ("fp32", "auto on cuda")
    monkeypatch.setattr(engine_module, "cpu_bf16_support", lambda: [])
    engine = Engine(model, EngineConfig(device="cpu", precision="auto"))
    assert engine.dtype == torch.float32
    assert engine.describe_precision() == "precision fp32 (auto: this CPU has no bf16 instructions (amx_bf16 / avx512_bf16))"


def test_progress_counts_output_frames_and_cancel_stops(model, clip):
    source, driving = clip
    seen = []
    engine = Engine(model, EngineConfig(device="cpu", chunk_size=4))
    list(animate_clip(engine, source, driving, progress=lambda stage, d, t: stage == "render" and seen.append((d, t))))
    assert seen[-1] == (11, 11) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    calls = iter([False, True])
    with pytest.raises(EngineInterrupted):
        list(engine.render(engine.prepare_source(source), torch.zeros(9, 15, 3), cancel=lambda: next(calls)))


@pytest.mark.parametrize("chunk", [1, 8, 32])
@pytest.mark.parametrize("stage", ["render", "estimate_motion"])
def test_cancel_costs_at_most_one_more_frame_whatever_the_chunk_size(model, clip, monkeypatch, stage, chunk):
    """Cancel flips after 3 frames: the engine computes at most one more frame, not the rest of its chunk."""
    source, driving = clip
    engine = Engine(model, EngineConfig(device="cpu", chunk_size=chunk))
    state = engine.prepare_source(source)
    computed = []
    name = "decode" if stage == "render" else "estimate_motion"
    original = getattr(model, name)

    def counting(*args):
        first = args[1] if name == "decode" else args[0]
        computed.append(int(first.shape[0]))
        return original(*args)

    monkeypatch.setattr(model, name, counting)
    if stage == "render":
        engine._decode = model.decode
    stop_after = 3
    with pytest.raises(EngineInterrupted, match="interrupted by the user"):
        if stage == "render":
            list(engine.render(state, torch.zeros(20, 15, 3), cancel=lambda: sum(computed) >= stop_after))
        else:
            engine.estimate_motion(torch.cat([driving, driving]), cancel=lambda: sum(computed) >= stop_after)
    assert stop_after <= sum(computed) <= stop_after + 1, computed


def test_streamed_driving_chunks_of_any_size_equal_one_tensor(model, clip):
    source, driving = clip
    engine = Engine(model, EngineConfig(device="cpu", chunk_size=4))
    whole = engine.estimate_motion(driving)
    pieces = engine.estimate_motion(iter([driving[:1], driving[1:7], driving[7:]]))
    for a, b in zip(whole.tensors().values(), pieces.tensors().values()):
        assert torch.allclose(a, b, atol=1e-6)
    uint8 = (driving.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    assert len(engine.estimate_motion(uint8)) == 11


def test_bad_configuration_and_inputs_are_refused(model):
    with pytest.raises(ValueError, match="chunk size"):
        EngineConfig(chunk_size=0)
    with pytest.raises(ValueError, match="precision"):
        EngineConfig(precision="int8")
    with pytest.raises(ValueError, match="unknown device|not available|unsupported"):
        Engine(model, EngineConfig(device="tpu:7"))
    engine = Engine(model, EngineConfig(device="cpu"))
    with pytest.raises(ValueError, match="NaN"):
        engine.prepare_source(torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        engine.estimate_motion(torch.zeros(0, 3, 64, 64))


def test_smoothing_strength_zero_is_identity_and_one_reduces_jitter(model, clip):
    engine = Engine(model, EngineConfig(device="cpu"))
    motion = engine.estimate_motion(clip[1])
    same = smooth_motion(motion, 25, 0.0)
    assert same is motion
    smoothed = smooth_motion(motion, 25, 1.0)
    assert smoothed.yaw.diff().abs().sum() < motion.yaw.diff().abs().sum()
    with pytest.raises(ValueError):
        smooth_motion(motion, 25, 2.0)


def test_non_finite_frames_stop_with_a_hint_and_oom_errors_point_to_the_readme(monkeypatch):
    from anytalk_app import cli
    from anytalk_core import engine as engine_module
    from anytalk_core.models.config import tiny_config
    from anytalk_core.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config(with_discriminator=False)).eval()
    eng = engine_module.Engine(model, engine_module.EngineConfig(device="cpu"))
    state = eng.prepare_source(torch.rand(1, 3, 64, 64))
    kp = eng.driven_keypoints(state, eng.estimate_motion(torch.rand(2, 3, 64, 64), total=2, fps=25))
    monkeypatch.setattr(eng, "_decode", lambda *a: {"prediction": torch.full((1, 3, 64, 64), float("nan"))})
    with pytest.raises(engine_module.NonFiniteOutputError, match="bf16 or fp32.*Troubleshooting"):
        next(eng.render(state, kp))
    hint = cli._with_hint(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "--chunk" in hint and "README.md, Troubleshooting" in hint
    assert cli._with_hint(ValueError("plain problem")) == "plain problem"


def literal_block(block, x: torch.Tensor, seg: torch.Tensor, upsample: int = 1) -> torch.Tensor:
    """The reference's computation of a SPADE block on x nearest-upsampled (no inference shortcuts)."""
    import torch.nn.functional as F

    with literal_computation(), torch.no_grad():
        return block(F.interpolate(x, scale_factor=upsample) if upsample > 1 else x, seg)


def test_spade_blocks_normalise_before_upsampling_at_inference_only():
    """At inference a SPADE block given ``upsample`` normalises its input at its own size and upsamples the
    result (instance normalisation commutes with nearest upsampling): the same numbers as the literal block on
    the upsampled input, without the full-size input (peak memory); with gradients it is the literal block."""
    import torch.nn.functional as F
    from anytalk_core.models.blocks import SPADEResBlock

    torch.manual_seed(0)
    for fin, fout in ((16, 8), (8, 8)):  # a learned shortcut, then the identity shortcut
        block = SPADEResBlock(fin, fout, label_nc=6, hidden=12).eval()
        x, seg = torch.randn(2, fin, 8, 8), torch.rand(2, 6, 4, 4)
        literal = literal_block(block, x, seg, upsample=2)
        with torch.no_grad():
            lazy = block(x, seg, upsample=2)
        assert lazy.shape == (2, fout, 16, 16)
        assert torch.allclose(lazy, literal, atol=1e-5), (lazy - literal).abs().max()
        trained = block(x, seg, upsample=2)  # gradients on: the literal computation, bit for bit
        assert torch.equal(trained.detach(), block(F.interpolate(x, scale_factor=2), seg).detach())


@pytest.mark.parametrize("batch,size,upsample,weights_cl", [(1, 5, 2, False), (1, 8, 1, True), (2, 6, 2, False),
                                                            (1, 3, 4, True)])
def test_channels_last_spade_blocks_equal_the_literal_contiguous_block(batch, size, upsample, weights_cl):
    """The engine's CPU layout: a SPADE block on channels-last maps (instance norm through batch norm for one
    image, the modulation by bands of rows, the upsampled map's convolution interleaved channels-last, the
    spectral norm read in the kernel's own order, the shortcut's projection folded into beta's convolution) gives
    the literal contiguous block's numbers, channels-last."""
    import torch.nn.functional as F
    from anytalk_core.models.blocks import SPADEResBlock, is_channels_last

    torch.manual_seed(1)
    block = SPADEResBlock(16, 8, label_nc=6, hidden=12).eval()
    x, seg = torch.randn(batch, 16, size, size), torch.rand(batch, 6, 4 * size // 4, 4 * size // 4)
    literal = literal_block(block, x, seg, upsample)
    with torch.no_grad():
        if weights_cl:  # as the engine leaves them on CUDA (on the CPU the weights keep their layout)
            block.to(memory_format=torch.channels_last)
        fast = block(x.contiguous(memory_format=torch.channels_last), seg.contiguous(memory_format=torch.channels_last),
                     upsample=upsample)
    assert fast.shape == literal.shape == (batch, 8, size * upsample, size * upsample)
    assert is_channels_last(fast)
    assert torch.allclose(fast, literal, atol=1e-5), (fast - literal).abs().max()


def test_the_cpu_engine_runs_the_generator_channels_last_unless_asked_not_to(model, clip):
    from anytalk_core.models.blocks import is_channels_last

    try:
        assert Engine(model, EngineConfig(device="cpu")).channels_last
        volume = torch.rand(1, model.config.generator.volume_channels // 16, 16, 16, 16)
        identity = torch.zeros(1, 16, 16, 16, 3)
        assert is_channels_last(model.generator.decoder_input(volume, identity, None))
        assert model.generator.decoder.fc.weight.is_contiguous()  # on the CPU the weights keep their layout
        contiguous = run(model, clip, chunk_size=4, channels_last=False)
        assert not is_channels_last(model.generator.decoder_input(volume, identity, None))
        assert (run(model, clip, chunk_size=4) - contiguous).abs().max() <= 1e-5
    finally:
        model.generator.channels_last = False


@pytest.mark.parametrize("factor,size,channels_last", [(2, (5, 7), False), (3, (4, 3), False), (4, (3, 5), True),
                                                       ((1, 2, 2), (3, 4, 5), False), ((2, 1, 3), (2, 3, 2), False)])
def test_convolving_a_nearest_upsampled_map_at_low_resolution_equals_the_literal_convolution(factor, size,
                                                                                          channels_last):
    """SPADE's modulation features (2D, factor 2 and 4) and the hourglass's up blocks (3D, (1, 2, 2)) convolve the
    low-res map with folded kernels and interleave: the numbers of convolving the upsampled map, any factor per axis,
    in the input's layout."""
    import torch.nn.functional as F
    from anytalk_core.models.blocks import conv3x3_nearest_upsampled, is_channels_last

    g = torch.Generator().manual_seed(3)
    dims = len(size)
    x = torch.randn(2, 5, *size, generator=g)
    weight, bias = torch.randn(6, 5, *(3,) * dims, generator=g), torch.randn(6, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    scale = (factor,) * dims if isinstance(factor, int) else factor
    conv = F.conv2d if dims == 2 else F.conv3d
    literal = conv(F.interpolate(x, scale_factor=scale), weight, bias, padding=1)
    fast = conv3x3_nearest_upsampled(x, weight, bias, factor)
    assert fast.shape == literal.shape == (2, 6, *(f * n for f, n in zip(scale, size)))
    assert torch.allclose(fast, literal, atol=1e-5), (fast - literal).abs().max()
    assert is_channels_last(fast) == channels_last


@pytest.mark.parametrize("outputs,kernel,batch", [(1, 7, 1), (2, 3, 2)])
def test_few_output_convolution_by_taps_equals_conv2d(outputs, kernel, batch):
    """The occlusion head's 1-output 7x7 convolution as per-tap matrix products and shifted sums."""
    import torch.nn.functional as F
    from anytalk_core.models.blocks import conv2d_to_few_channels

    g = torch.Generator().manual_seed(4)
    x = torch.randn(batch, 40, 9, 6, generator=g)
    weight, bias = torch.randn(outputs, 40, kernel, kernel, generator=g), torch.randn(outputs, generator=g)
    expected = F.conv2d(x, weight, bias, padding=kernel // 2)
    assert torch.allclose(conv2d_to_few_channels(x, weight, bias), expected, atol=1e-4)


def test_up_blocks_and_occlusion_take_the_rewrites_at_inference_only():
    """The dense motion network at inference (up blocks on >= 8x8 maps through the low-res convolution, the
    occlusion head by taps) gives the literal network's outputs; inside ``literal_computation`` and with gradients
    the modules run as written (their forward hooks fire)."""
    from anytalk_core.models.config import DenseMotionConfig
    from anytalk_core.models.dense_motion import DenseMotionNetwork

    torch.manual_seed(2)
    cfg = DenseMotionConfig(block_expansion=4, max_features=16, num_blocks=2, num_kp=3, feature_channels=4,
                            compress=2, reshape_depth=4)
    net = DenseMotionNetwork(cfg).eval()
    feature = torch.randn(1, 4, 4, 16, 16)  # the up blocks see 4x4 (too small to pay off: literal) and 8x8 maps
    kp_d, kp_s = torch.rand(1, 3, 3) * 2 - 1, torch.rand(1, 3, 3) * 2 - 1
    calls = []
    for name, module in (("4x4 up", net.hourglass.decoder.up_blocks[0].conv),
                         ("8x8 up", net.hourglass.decoder.up_blocks[1].conv), ("occlusion", net.occlusion)):
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
    with torch.no_grad():
        fast = net(feature, kp_d, kp_s)
        assert calls == ["4x4 up"]
        with literal_computation():
            literal = net(feature, kp_d, kp_s)
        assert calls == ["4x4 up", "4x4 up", "8x8 up", "occlusion"]
    for name in ("mask", "deformation", "occlusion_map"):
        assert torch.allclose(fast[name], literal[name], atol=1e-5), name
    calls.clear()
    net(feature, kp_d, kp_s)  # training's path: the modules themselves
    assert calls == ["4x4 up", "8x8 up", "occlusion"]
