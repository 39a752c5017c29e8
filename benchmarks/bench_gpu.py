"""GPU inference benchmark (not a test): one table of ms/frame, peak memory and PSNR against fp32.

    python benchmarks/bench_gpu.py                      # CUDA: full size 256, random weights
    python benchmarks/bench_gpu.py --device cpu         # no CUDA: the same table with a tiny model

Rows: the engine in fp32 (the reference), fp16, bf16, each half precision with channels_last,
``torch.compile`` and CUDA graphs (CUDA only), then the audio-to-motion transformer with the xformers and
SDPA attention kernels (ms per second of speech; the row names the kernel that really ran), and peak
device memory while streaming ``--memory-frames`` frames. Every video row is checked against the fp32
frames (PSNR, dB; identical frames print ``inf``). Per-frame time covers the whole driving path of a
chunk: motion estimation, keypoint transfer, dense motion and generator, frames back on the host.
A row that cannot run here (no CUDA, no xformers, no compiler) says why instead of a number. The run
stops adding rows once ``--budget-s`` is spent, so it fits a fixed slot (default 7 minutes).
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from anytalk_core.engine import Engine, EngineConfig  # noqa: E402
from anytalk_core.models.audio2motion import AudioToMotion  # noqa: E402
from anytalk_core.models.base import TransferOptions  # noqa: E402
from anytalk_core.models.config import AudioToMotionConfig, ModelConfig, tiny_config  # noqa: E402
from anytalk_core.models.registry import build_model  # noqa: E402
from anytalk_eval.metrics.pixel import mse, psnr_from_mse  # noqa: E402


@dataclass
class Row:
    label: str
    ms: float | None = None  # per frame (video rows) or per second of audio (audio rows)
    unit: str = "ms/frame"
    psnr: float | None = None
    peak_mib: float | None = None
    note: str = ""


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of a whole clip (the MSE pooled over all frames) in 0..1; ``inf`` for identical frames."""
    return float(psnr_from_mse(mse(a, b).mean()))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    """Peak device memory since the last reset (CUDA) or the process's peak RSS (CPU), MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Bench:
    """The model, its inputs and the fp32 reference frames, shared by every row."""

    def __init__(self, device: torch.device, full_size: bool, frames: int, chunk: int):
        torch.manual_seed(0)
        config = ModelConfig() if full_size else tiny_config(with_discriminator=False)
        self.config = config
        self.device = device
        self.model = build_model(config).eval()
        size = config.image_size
        g = torch.Generator().manual_seed(0)
        self.source = torch.rand(1, 3, size, size, generator=g)
        self.driving = torch.rand(frames, 3, size, size, generator=g)
        self.chunk = chunk
        self.reference: torch.Tensor | None = None

    def engine(self, precision: str, channels_last: bool = False, compile: bool = False) -> Engine:
        engine = Engine(self.model, EngineConfig(device=str(self.device), precision=precision, chunk_size=self.chunk,
                                                 channels_last=channels_last, compile=compile, batch_frames=True))
        return engine

    def run(self, engine: Engine, driving: torch.Tensor | None = None) -> torch.Tensor:
        """The whole driving path for the clip; frames (N, 3, H, W) on the host."""
        driving = self.driving if driving is None else driving
        source = engine.prepare_source(self.source)
        motion = engine.estimate_motion(driving)
        keypoints = engine.driven_keypoints(source, motion, TransferOptions(mode="relative"))
        return torch.cat(list(engine.render(source, keypoints)))

    def reset_layout(self) -> None:
        self.model.generator.to(memory_format=torch.contiguous_format)


def time_per_frame(fn: Callable[[], torch.Tensor], frames: int, device: torch.device,
                   repeats: int) -> tuple[float, torch.Tensor]:
    """Best of ``repeats`` timed runs after one warm-up, in ms per frame, with the last output."""
    out = fn()  # warm-up: kernel selection, compilation, allocator growth
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / frames)
    return best * 1e3, out


def video_row(bench: Bench, label: str, precision: str, repeats: int, channels_last: bool = False,
              compile: bool = False) -> Row:
    try:
        engine = bench.engine(precision, channels_last=channels_last, compile=compile)
        ms, frames = time_per_frame(lambda: bench.run(engine), bench.driving.shape[0], bench.device, repeats)
    except Exception as exc:  # noqa: BLE001 - a benchmark row reports what failed and the table goes on
        return Row(label, note=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
    finally:
        bench.reset_layout()
    if bench.reference is None:
        bench.reference = frames
    return Row(label, ms, psnr=psnr(frames, bench.reference))


def cuda_graph_row(bench: Bench, precision: str, repeats: int) -> Row:
    """Dense motion + generator captured once as a CUDA graph for a fixed chunk, replayed per chunk."""
    label = f"{precision} + CUDA graph (render)"
    if bench.device.type != "cuda":
        return Row(label, note="skipped: CUDA graphs need a CUDA device")
    model, dtype = bench.model, {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    engine = bench.engine(precision)
    with torch.no_grad():
        source = engine.prepare_source(bench.source)
        motion = engine.estimate_motion(bench.driving)
        keypoints = engine.driven_keypoints(source, motion, TransferOptions(mode="relative")).to(bench.device)
    n = bench.chunk
    if keypoints.shape[0] % n:
        return Row(label, note=f"skipped: {keypoints.shape[0]} frames is not a multiple of the chunk {n}")
    static_kp = keypoints[:n].clone()
    volume = source.volume.expand(n, *source.volume.shape[1:])
    kp_source = source.keypoints.expand(n, *source.keypoints.shape[1:])
    try:
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up on a side stream, as capture requires
                    with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
                        model.decode(volume, static_kp, kp_source)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
                    static_out = model.decode(volume, static_kp, kp_source)["prediction"]

        def render() -> torch.Tensor:
            out = []
            for start in range(0, keypoints.shape[0], n):
                static_kp.copy_(keypoints[start:start + n])
                graph.replay()
                out.append(static_out.float().clamp(0, 1).cpu())
            return torch.cat(out)

        ms, frames = time_per_frame(render, keypoints.shape[0], bench.device, repeats)
    except Exception as exc:  # noqa: BLE001
        return Row(label, note=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
    return Row(label, ms, psnr=psnr(frames, bench.reference) if bench.reference is not None else None,
               note="render only (motion estimated outside the graph)")


def audio_rows(device: torch.device, seconds: float, repeats: int) -> list[Row]:
    """The audio-to-motion transformer per second of speech at 25 fps, with each attention kernel."""
    torch.manual_seed(0)
    config = AudioToMotionConfig()
    net = AudioToMotion(config).to(device).eval()
    frames = int(seconds * 25)
    windows = torch.randn(1, frames, 2 * config.context + 1, config.feature_dim, device=device)
    rows, reference = [], None
    for backend in ("sdpa", "xformers"):
        net.attention_backend = backend
        label = f"audio-to-motion, {backend}"
        try:
            with torch.no_grad():
                ms, out = time_per_frame(lambda: net(windows), frames, device, repeats)
        except RuntimeError as exc:  # a chosen kernel that cannot run here raises (no silent switch)
            rows.append(Row(label, note=f"not available here: {exc}"))
            continue
        reference = out if reference is None else reference
        err = float((out - reference).abs().max())
        rows.append(Row(label, ms * 25, unit="ms/s audio", note=f"max |diff| to sdpa {err:.1e}"))
    return rows


def memory_row(bench: Bench, precision: str, frames: int) -> Row:
    """Peak device memory while streaming ``frames`` driving frames through the engine (fed chunk by chunk)."""
    label = f"{precision}, {frames} frames streamed"
    engine = bench.engine(precision)
    size = bench.config.image_size
    g = torch.Generator().manual_seed(1)

    def stream():
        for start in range(0, frames, bench.chunk):
            yield torch.rand(min(bench.chunk, frames - start), 3, size, size, generator=g)

    if bench.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(bench.device)
    try:
        synchronize(bench.device)
        start = time.perf_counter()
        source = engine.prepare_source(bench.source)
        motion = engine.estimate_motion(stream(), total=frames)
        keypoints = engine.driven_keypoints(source, motion, TransferOptions(mode="relative"))
        for _ in engine.render(source, keypoints):
            pass
        synchronize(bench.device)
        ms = (time.perf_counter() - start) / frames * 1e3
    except Exception as exc:  # noqa: BLE001
        return Row(label, note=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
    kind = "peak GPU memory" if bench.device.type == "cuda" else "peak process RSS"
    return Row(label, ms, peak_mib=peak_memory_mib(bench.device), note=kind)


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    print(f"{'path':40s} {'time':>10s} {'unit':>11s} {'PSNR dB':>8s} {'peak MiB':>9s}  note")
    for r in rows:
        time_text = f"{r.ms:10.2f}" if r.ms is not None else f"{'-':>10s}"
        psnr_text = (f"{r.psnr:8.1f}" if math.isfinite(r.psnr) else f"{'inf':>8s}") if r.psnr is not None else f"{'-':>8s}"
        mem_text = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9s}"
        print(f"{r.label:40s} {time_text} {r.unit:>11s} {psnr_text} {mem_text}  {r.note}")


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda, cuda:N or cpu")
    parser.add_argument("--full", action="store_true", help="full-size model on the CPU too (slow)")
    parser.add_argument("--frames", type=int, default=None, help="frames per timed run (default 64 GPU, 4 CPU)")
    parser.add_argument("--chunk", type=int, default=None, help="frames per engine chunk (default 16 GPU, 2 CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (the best is reported)")
    parser.add_argument("--memory-frames", type=int, default=1000, help="frames streamed for the memory row")
    parser.add_argument("--audio-seconds", type=float, default=20.0, help="speech length for the audio rows")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop adding rows after this many seconds")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    on_gpu = device.type == "cuda"
    full = on_gpu or args.full
    frames = args.frames or (64 if on_gpu else 4)
    chunk = args.chunk or (16 if on_gpu else 2)
    started = time.perf_counter()
    bench = Bench(device, full, frames, chunk)
    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    header = (f"torch {torch.__version__} on {name}; {'full size' if full else 'tiny model'} "
              f"{bench.config.image_size} px, random weights, {frames} frames, chunk {chunk}")

    plan: list[Callable[[], Row | list[Row]]] = [
        lambda: video_row(bench, "fp32 (reference)", "fp32", args.repeats),
        lambda: video_row(bench, "fp16", "fp16", args.repeats),
        lambda: video_row(bench, "bf16", "bf16", args.repeats),
        lambda: video_row(bench, "fp16 + channels_last", "fp16", args.repeats, channels_last=True),
        lambda: video_row(bench, "bf16 + channels_last", "bf16", args.repeats, channels_last=True),
        lambda: (video_row(bench, "fp16 + torch.compile (generator)", "fp16", args.repeats, compile=True) if on_gpu
                 else Row("fp16 + torch.compile (generator)", note="skipped: timed on CUDA only")),
        lambda: cuda_graph_row(bench, "fp16", args.repeats),
        lambda: audio_rows(device, args.audio_seconds, args.repeats),
        lambda: memory_row(bench, "fp16" if on_gpu else "fp32", args.memory_frames),
    ]
    rows: list[Row] = []
    for step in plan:
        if time.perf_counter() - started > args.budget_s:
            rows.append(Row("(remaining rows)", note=f"skipped: the {args.budget_s:.0f} s budget is spent"))
            break
        result = step()
        rows.extend(result if isinstance(result, list) else [result])
    print_table(rows, header)
    print(f"total {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
