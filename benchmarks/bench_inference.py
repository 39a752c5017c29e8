"""Inference benchmark (not a test): per-stage cost, the plain reference loop against the engine, memory.

    python benchmarks/bench_inference.py [--threads 2] [--frames 3] [--skip-rss | --rss-only]

Full size (256 px, the released face-vid2vid widths), random weights with batch-norm statistics calibrated on random
images (as trained networks have them: the uncalibrated unit statistics make activations grow layer by layer), fixed
thread count. Prints:
- per stage: ms/frame and multiply-accumulates (conv/linear layers, counted by hooks);
- the machine's measured fp32 GEMM throughput and the compute limit per frame (2 x MACs / throughput);
- the plain path (the reference demo's loop: per frame the frame's head pose, the keypoint transform, then
  the whole generator on the source image with the appearance volume recomputed, batch 1, the literal SPADE
  computation) against the engine in fp32 and bf16: ms/frame, ratio, fraction of the compute limit, and max
  abs difference. Per frame = (T(n+1 frames) - T(1 frame)) / n, each the best of two runs: the work a long clip
  pays per frame, without the one-off source encoding. The effect of each saving measured alone ("literal
  layers": inside `blocks.literal_computation`, without the exact rewrites: the engine's scheduling and source
  caching only);
- bf16 against the engine's fp32: speed-up and PSNR of its frames against fp32's, with the dense-motion heads and
  the image layer kept in fp32 (the engine's mixed precision) and with every layer in bf16, on the random
  full-size weights and on the bundled demo model with its own source and clip;
- peak RSS of the streaming CLI at full size from our .safetensors and from a .pth.tar in face-vid2vid's released
  layout (with the discriminator and optimizer states), and at tiny widths for 100 vs 2,000 frames.
The timings run with freed memory kept in the process (`memory.keep_freed_memory`, as `--memory fast`): glibc's
default made the same path's time vary by +-15 % with what earlier rows had freed. All ratios come from this one run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from anytalk_core.checkpoints import load_model, save_checkpoint  # noqa: E402
from anytalk_core.engine import Engine, EngineConfig, cpu_bf16_support  # noqa: E402
from anytalk_core.memory import keep_freed_memory  # noqa: E402
from anytalk_core.models import blocks  # noqa: E402
from anytalk_core.models.base import TransferOptions  # noqa: E402
from anytalk_core.models.blocks import literal_computation  # noqa: E402
from anytalk_core.models.config import ModelConfig, tiny_config  # noqa: E402
from anytalk_core.models.face_vid2vid.reader import released_modules  # noqa: E402
from anytalk_core.models.registry import build_model  # noqa: E402
from anytalk_core.stages import animate_clip  # noqa: E402
from bench_gpu import psnr  # noqa: E402  (this folder: the whole clip's PSNR, as bench_gpu reports it)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def gemm_throughput(sizes: tuple[int, ...] = (1024, 2048, 3072, 4096), repeats: int = 5) -> float:
    """Best fp32 matmul rate over a few square sizes and runs (FLOP/s): the machine's practical peak."""
    best_rate = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best_rate = max(best_rate, 2 * n ** 3 / (time.perf_counter() - start))
    return best_rate


def peak_rss_of(cmd: list[str]) -> float:
    """Peak resident memory (GiB) of a child ``anytalk`` process: its VmHWM, read just before it exits.

    (getrusage's ru_maxrss would carry over the forking parent's peak across exec on Linux.)
    """
    wrapper = ("import atexit, sys, runpy\n"
               "def report():\n"
               "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
               "    print('PEAK_RSS_KB', hwm, file=sys.stderr)\n"
               "atexit.register(report)\n"
               "sys.argv = sys.argv[1:]\n"
               "runpy.run_module('anytalk_app.cli', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", wrapper, "anytalk", *cmd], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")][-1]
    return int(line.split()[1]) / 2 ** 20


def calibrate_batch_norm(model: nn.Module, size: int, images: int = 2) -> None:
    """Set every batch norm's running statistics to their average over the model's passes on random images."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(images):
            state = model.prepare_source(torch.rand(1, 3, size, size))
            kp = model.driven_keypoints(state, model.estimate_motion(torch.rand(1, 3, size, size)))
            model.decode(state.volume, kp, state.keypoints)
    model.eval()


@contextlib.contextmanager
def every_layer_bf16():
    """Within: the engine's fp32 layers under bf16 (dense-motion heads, image layer) run in bf16 too."""
    blocks.KEEP_FP32_UNDER_BF16 = False
    try:
        yield
    finally:
        blocks.KEEP_FP32_UNDER_BF16 = True


def per_frame(render: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor,
              repeats: int = 2) -> tuple[float, torch.Tensor]:
    """Seconds per frame as a long clip sees them, and the clip's frames: (T(clip) - T(its first frame)) / (n - 1),
    each time the fastest of ``repeats`` runs. The one-off work (the source's encoding and keypoints, kernel set-up)
    drops out, as in the issue that set the speed bars ((T9 - T1) / 8)."""
    best_one = best_all = float("inf")
    frames = clip
    for _ in range(repeats):
        start = time.perf_counter()
        render(clip[:1])
        best_one = min(best_one, time.perf_counter() - start)
        start = time.perf_counter()
        frames = render(clip)
        best_all = min(best_all, time.perf_counter() - start)
    return (best_all - best_one) / (clip.shape[0] - 1), frames


def bf16_against_fp32(model: nn.Module, source: torch.Tensor, driving: torch.Tensor) -> list[tuple[str, float, float]]:
    """(label, speed-up over the engine's fp32 per frame, PSNR against its frames) of the engine's bf16, mixed and
    all-bf16."""
    def run(precision: str) -> tuple[float, torch.Tensor]:
        engine = Engine(model, EngineConfig(device="cpu", precision=precision, chunk_size=4))
        return per_frame(lambda clip: torch.cat(list(animate_clip(engine, source, clip,
                                                                  TransferOptions(mode="absolute")))), driving)

    t32, f32 = run("fp32")
    t16, f16 = run("bf16")
    with every_layer_bf16():
        t16_all, f16_all = run("bf16")
    return [("bf16 (engine: fp32 heads and image)", t32 / t16, psnr(f16, f32)),
            ("bf16, every layer", t32 / t16_all, psnr(f16_all, f32))]


def released_layout(model: nn.Module) -> dict:
    """The model as face-vid2vid's released ``.pth.tar`` holds it: a state dict per network, the discriminator,
    and Adam's state for each network."""
    out: dict = released_modules(model.state_dict())
    for name in list(out):
        params = [v for v in out[name].values() if v.is_floating_point()]
        out[f"optimizer_{name}"] = {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                                                  "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(params)},
                                    "param_groups": [{"lr": 2e-4, "params": list(range(len(params)))}]}
    return out


def make_clip(folder: str, name: str, n: int, size: int) -> str:
    from anytalk_core.media import write_video

    g = torch.Generator().manual_seed(0)
    path = os.path.join(folder, name)
    frames = (torch.rand(n, size, size, 3, generator=g) * 255).to(torch.uint8)
    write_video(path, frames, fps=25)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=3,
                        help="frames timed per path at full size, after a first one (per frame = (T(n+1) - T(1)) / n)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-only", action="store_true", help="only the memory section (no timing)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="the bf16 engine row: auto = only where the CPU has amx_bf16 / avx512_bf16")
    args = parser.parse_args()
    bf16_cpu = args.bf16 == "on" or (args.bf16 == "auto" and bool(cpu_bf16_support()))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, full size 256, random weights, fp32")
    if args.rss_only:
        report_memory(bf16_cpu)
        return
    # glibc's default maps a large block afresh or serves it from the heap depending on what was freed before, so
    # the same path's time varied by +-15 % with the rows' order; kept freed memory makes every row pay for compute.
    kept = keep_freed_memory()
    print(f"allocator: freed memory kept in the process ({'memory.keep_freed_memory' if kept else 'not glibc: as is'}); "
          "the memory section runs the CLI as users do (--memory lean)")

    model = build_model(ModelConfig())
    calibrate_batch_norm(model, 256)
    source = torch.rand(1, 3, 256, 256)
    driving = torch.rand(args.frames + 1, 3, 256, 256)

    # --- per-stage cost ---------------------------------------------------------------------------
    with torch.no_grad():
        state = model.prepare_source(source)
        motion = model.estimate_motion(driving[:1])
        kp = model.driven_keypoints(state, motion)
        dense = model.dense_motion(state.volume, kp, state.keypoints)
        dec_in = model.generator.decoder_input(state.volume, dense["deformation"], dense["occlusion_map"])
    stages = {
        "appearance encoder": (model.appearance, (source,)),
        "keypoint detector": (model.keypoints, (source,)),
        "motion estimator": (model.motion, (driving[:1],)),
        "dense motion": (model.dense_motion, (state.volume, kp, state.keypoints)),
        "generator (warp+3rd/4th)": (lambda v, d, o: model.generator.decoder_input(v, d, o),
                                     (state.volume, dense["deformation"], dense["occlusion_map"])),
        "SPADE decoder": (model.generator.decoder, (dec_in,)),
    }
    from anytalk_core.models.blocks import SpectralNormConv2d

    def stage_macs(fn, inputs) -> int:
        total = 0

        def hook(mod, inp, out):
            nonlocal total
            if isinstance(mod, (nn.Conv2d, nn.Conv3d)):
                total += out.numel() * mod.weight[0].numel()
            elif isinstance(mod, nn.Linear):
                total += out.numel() * mod.in_features
            elif isinstance(mod, SpectralNormConv2d):
                total += out.numel() * mod.weight_orig[0].numel()

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear, SpectralNormConv2d))]
        with literal_computation(), torch.enable_grad():  # count the reference computation, module by module
            fn(*inputs)
        for h in handles:
            h.remove()
        return total

    flops = gemm_throughput()
    print(f"\nmeasured fp32 GEMM throughput: {flops / 1e9:.1f} GFLOP/s (best square matmul, 1024..4096)")
    print(f"\n{'stage':28s} {'ms/frame':>10s} {'GMAC':>8s} {'limit ms':>9s} {'of limit':>9s}")
    stage_totals = {}
    for name, (fn, inputs) in stages.items():
        macs = stage_macs(fn, inputs)
        with literal_computation(), torch.no_grad():
            seconds = timed(lambda: fn(*inputs), 1)
        limit = 2 * macs / flops
        stage_totals[name] = (seconds, macs)
        print(f"{name:28s} {seconds * 1e3:10.0f} {macs / 1e9:8.1f} {limit * 1e3:9.0f} {limit / seconds:9.0%}")

    # --- plain path vs engine ----------------------------------------------------------------------
    def plain_path(clip: torch.Tensor) -> torch.Tensor:
        """The reference demo's loop, literally: everything per frame, batch 1, SPADE as written."""
        model.generator.channels_last = False  # the reference's layout (an engine row may have set it)
        out = []
        with literal_computation(), torch.no_grad():
            canonical = model.canonical_keypoints(source)  # the demo computes the source keypoints once
            src_motion = model.estimate_motion(source)
            kp_source = model.motion_keypoints(canonical, src_motion)
            for i in range(clip.shape[0]):
                drv = model.estimate_motion(clip[i:i + 1])
                kp_driving = model.motion_keypoints(canonical, drv)
                volume = model.encode_appearance(source)  # recomputed inside the generator every frame
                out.append(model.decode(volume, kp_driving, kp_source)["prediction"])
        return torch.cat(out)

    def engine_path(precision: str, fast: bool = True, channels_last: bool | None = None) -> Callable:
        engine = Engine(model, EngineConfig(device="cpu", precision=precision, chunk_size=4,
                                            channels_last=channels_last))

        def render(clip: torch.Tensor) -> torch.Tensor:
            with contextlib.nullcontext() if fast else literal_computation():
                return torch.cat(list(animate_clip(engine, source, clip, TransferOptions(mode="absolute"))))
        return render

    total_macs = sum(m for _, m in stage_totals.values()) - stage_totals["appearance encoder"][1] \
        - stage_totals["keypoint detector"][1]
    limit = 2 * total_macs / flops
    t_plain, plain = per_frame(plain_path, driving)
    results = {}
    for label, precision, fast, cl in (("engine fp32 (channels-last)", "fp32", True, None),
                                       ("engine fp32, contiguous maps", "fp32", True, False),
                                       ("engine fp32, literal layers", "fp32", False, None),
                                       ("engine bf16 (channels-last)", "bf16", True, None)):
        if precision == "bf16" and not bf16_cpu:
            print(f"({label}: skipped: this CPU has neither amx_bf16 nor avx512_bf16, so torch emulates bf16 many "
                  "times slower than fp32; --bf16 on runs it anyway)")
            continue
        seconds, frames = per_frame(engine_path(precision, fast, cl), driving)
        results[label] = (seconds, (frames - plain).abs().max().item())
    print(f"\nper-frame compute limit of the engine's work (motion + dense motion + generator): {limit * 1e3:.0f} ms"
          f" ({total_macs / 1e9:.1f} GMAC; the plain path also recomputes the appearance encoder: "
          f"{(total_macs + stage_totals['appearance encoder'][1]) / 1e9:.1f} GMAC)")
    print(f"\n{'path':34s} {'ms/frame':>9s} {'speed-up':>9s} {'of limit':>9s} {'max |diff|':>11s}")
    plain_limit = 2 * (total_macs + stage_totals["appearance encoder"][1]) / flops
    print(f"{'plain (reference demo loop)':34s} {t_plain * 1e3:9.0f} {1.0:9.2f}x {plain_limit / t_plain:9.0%} {0.0:11.1e}")
    for label, (seconds, diff) in results.items():
        print(f"{label:34s} {seconds * 1e3:9.0f} {t_plain / seconds:9.2f}x {limit / seconds:9.0%} {diff:11.1e}")

    if bf16_cpu:
        from anytalk_app.demo import DEMO_CHECKPOINT, DEMO_DRIVING, DEMO_SOURCE, demo_file
        from anytalk_core.media import load_image, read_video

        demo = load_model(str(demo_file(DEMO_CHECKPOINT)))
        size = demo.config.image_size
        clip = read_video(demo_file(DEMO_DRIVING), max_frames=8, audio=False).frames.permute(0, 3, 1, 2)
        demo_source = load_image(demo_file(DEMO_SOURCE)).permute(2, 0, 1).unsqueeze(0)
        rows = [("full size, random weights", bf16_against_fp32(model, source, driving)),
                (f"demo model ({size} px, its source and 8 clip frames)",
                 bf16_against_fp32(demo, nn.functional.interpolate(demo_source, size=(size, size), mode="area"),
                                   nn.functional.interpolate(clip.float() / 255, size=(size, size), mode="area")))]
        print(f"\n{'bf16 against the engine fp32':88s} {'speed-up':>9s} {'PSNR dB':>8s}")
        for where, results_bf16 in rows:
            for label, speed_up, db in results_bf16:
                print(f"{where + ': ' + label:88s} {speed_up:8.2f}x {db:8.1f}")

    if not args.skip_rss:
        report_memory(bf16_cpu)


def report_memory(bf16_cpu: bool) -> None:
    """Peak RSS of the streaming CLI (`anytalk animate` in a child process) at full size from both file
    layouts, and at tiny widths for 100 against 2,000 frames."""
    with tempfile.TemporaryDirectory() as tmp:
        from anytalk_core.media import save_image

        save_image(torch.rand(256, 256, 3), os.path.join(tmp, "source.png"))
        full_ckpt = os.path.join(tmp, "full.safetensors")
        released_ckpt = os.path.join(tmp, "full.pth.tar")
        model_cpu = build_model(ModelConfig(), with_discriminator=True)
        save_checkpoint(model_cpu, full_ckpt)
        torch.save(released_layout(model_cpu), released_ckpt)
        del model_cpu
        tiny_ckpt = os.path.join(tmp, "tiny.safetensors")
        save_checkpoint(build_model(tiny_config(with_discriminator=False)), tiny_ckpt)

        def cli(ckpt: str, clip: str, out: str, chunk: int = 4, precision: str = "fp32") -> list[str]:
            return ["animate", "--source", os.path.join(tmp, "source.png"), "--driving", clip, "--checkpoint", ckpt,
                    "--out", os.path.join(tmp, out), "--quiet", "--device", "cpu", "--chunk", str(chunk),
                    "--precision", precision]

        full_clip = make_clip(tmp, "full.mp4", 4, 256)
        baseline = subprocess.run(
            [sys.executable, "-c", "import torch, anytalk_core.pipeline, anytalk_app.cli\n"
             "torch.nn.functional.conv2d(torch.rand(1, 8, 64, 64), torch.rand(8, 8, 3, 3))\n"
             "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"],
            capture_output=True, text=True, check=True).stdout.split()[-1]
        print(f"\nbaseline: torch and the package imported, one convolution run: {int(baseline) / 2 ** 20:.3f} GiB "
              "(machine-dependent; the peaks below include it)")
        print("peak RSS of `anytalk animate` at full size (256 px, 4 frames, default chunk):")
        runs = [("fp32", ".safetensors (ours)", full_ckpt), ("fp32", ".pth.tar (released layout)", released_ckpt)]
        if bf16_cpu:
            runs.append(("bf16", ".safetensors (ours)", full_ckpt))
        for precision, label, ckpt in runs:
            rss = peak_rss_of(cli(ckpt, full_clip, f"out_{precision}_{os.path.basename(ckpt)}.mp4", chunk=8,
                                  precision=precision))
            print(f"  {precision} {label:28s} {rss:.3f} GiB (file {os.path.getsize(ckpt) / 2 ** 30:.2f} GiB)")
        short = make_clip(tmp, "short.mp4", 100, 64)
        long = make_clip(tmp, "long.mp4", 2000, 64)
        rss_short = peak_rss_of(cli(tiny_ckpt, short, "out_short.mp4"))
        rss_long = peak_rss_of(cli(tiny_ckpt, long, "out_long.mp4"))
        print(f"peak RSS at tiny widths: 100 frames {rss_short:.3f} GiB, 2,000 frames {rss_long:.3f} GiB, "
              f"ratio {rss_long / rss_short:.3f}")


if __name__ == "__main__":
    main()
