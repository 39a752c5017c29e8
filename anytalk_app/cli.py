"""The ``anytalk`` command line: ``anytalk convert``, ``anytalk animate`` and ``anytalk demo``.

Every failure prints one line ``anytalk: error: ...`` and exits with a non-zero status; nothing is written.
"""
from __future__ import annotations

import argparse
import sys

from anytalk_core import __version__
from anytalk_app.args import HelpFormatter, OneLineErrorParser, finite, positive_int


def _convert(args: argparse.Namespace) -> int:
    from anytalk_core.checkpoints import convert, read_weights

    family = args.family.replace("-", "_")
    dst = convert(args.src, args.dst, family=family, overwrite=args.overwrite)
    weights = read_weights(dst)
    print(f"wrote {dst} ({weights.family}, {len(weights.state)} tensors)")
    return 0


def _animate(args: argparse.Namespace) -> int:
    from anytalk_core.checkpoints import load_model
    from anytalk_core.engine import EngineConfig, resolve_device
    from anytalk_core.memory import keep_freed_memory, map_large_allocations
    from anytalk_core.models.base import TalkingHeadModel, TransferOptions
    from anytalk_core.pipeline import AnimateOptions, animate_file, check_inputs, check_paths

    options = AnimateOptions(
        transfer=TransferOptions(mode="absolute" if args.absolute else "relative", pose_strength=args.pose_strength,
                                 expression_strength=args.expression_strength,
                                 translation_strength=args.translation_strength, adapt_scale=args.adapt_scale),
        smoothing=args.smooth, crop=args.crop, driving_crop=args.driving_crop, track_every=args.track_every,
        paste_back=args.paste_back,
        engine=EngineConfig(device=args.device, precision=args.precision, chunk_size=args.chunk),
        overwrite=args.overwrite, release_networks=True, fps=args.fps, upscale=args.upscale,
    )
    resolve_device(args.device)
    check_paths(args.source, args.driving, args.out, args.overwrite, extra_inputs=(args.checkpoint,), audio=args.audio)
    check_inputs(args.source, args.driving, args.audio)  # every input decodes before the model is loaded
    if args.memory == "lean":
        map_large_allocations()  # a one-shot process: freed activations go back to the OS (peak memory)
    else:
        keep_freed_memory()  # ... or stay for the next frame's tensors (speed)
    # the rendering networks are read only once the driving motion is known (after the others are freed)
    model = load_model(args.checkpoint, family=args.family.replace("-", "_"), defer=TalkingHeadModel.render_modules)
    bars = _StageBars(args.quiet)
    try:
        out = animate_file(model, args.source, args.driving, args.out, options, progress=bars.update, audio=args.audio,
                           say=_say)
    finally:
        bars.close()
    print(f"wrote {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from anytalk_core.engine import resolve_device

    from .demo import run_demo

    resolve_device(args.device)
    bars = _StageBars(args.quiet)
    try:
        result = run_demo(args.out_dir, checkpoint=args.checkpoint, source=args.source, driving=args.driving,
                          device=args.device, precision=args.precision, tile=args.tile, video_format=args.format,
                          progress=bars.update)
    finally:
        bars.close()
    _say(result.precision)
    print(f"wrote {result.video} ({result.frames} frames at {result.fps:g} fps: driving | source | result)")
    print(f"wrote {result.contact_sheet} (top: driving frames, bottom: the animated source)")
    return 0


def _say(line: str) -> None:
    """What a user should know about a run (how it was framed, the output size): one line on stderr."""
    print(f"anytalk: {line}", file=sys.stderr)


_STAGE_LABELS = {"tracking": "tracking the head", "motion": "driving motion", "audio": "audio motion",
                 "render": "rendering"}


class _StageBars:
    """One labelled tqdm bar per stage of a run, in that stage's frames, fed ``(stage, done, total)``.

    A bar appears when its stage starts (the engine reports ``(0, total)`` first), so each bar's rate and time
    estimate are its own stage's; none is shown before the first stage or left empty.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.stage: str | None = None
        self.bar = None

    def update(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            from tqdm import tqdm

            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, unit="frame", desc=_STAGE_LABELS.get(stage, stage), dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)  # tqdm's rate follows the chunks as they come

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_MAIN_DESCRIPTION = """\
AnyTalk talking-head tools: animate a portrait with the head motion and expressions
of a driving video, and convert face-vid2vid / LivePortrait checkpoints.

Run 'anytalk COMMAND --help' for the options of a command."""

_MAIN_EPILOG = """\
examples:
  anytalk convert 00000189-checkpoint.pth.tar models/anytalk/vox.safetensors
  anytalk animate --source portrait.png --driving driving.mp4 \\
      --checkpoint models/anytalk/vox.safetensors --out result.mp4
  anytalk demo
  anytalk --version"""

_DEMO_DESCRIPTION = """\
Animate the bundled cartoon-animal portrait with the bundled synthetic human clip using
the bundled demo model (128 px, trained on synthetic heads: 64 px stages from
training/configs/demo.toml, demo_stage2.toml and demo_stage3.toml, then demo128.toml;
assets/demo/README.md gives the commands). Writes anytalk_demo_NNNNN.mp4 (driving | source |
result, with the clip's audio) and a contact sheet PNG into OUT_DIR; nothing is overwritten.
--checkpoint/--source/--driving replace the bundled files. The head turns, nods and tilts
with the driver; the mouth opens only faintly."""

# The engine's choices (anytalk_core.engine.PRECISION_CHOICES), spelled out so that --help needs no torch.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
_PRECISION_HELP = ("number format of the networks. auto: bf16 on a CPU with amx_bf16 / avx512_bf16 (1.4-2.3x as "
                   "fast, within a grey level of fp32), else fp32; the run says which. On a GPU bf16 or fp16 "
                   "(fp16 may give black frames: then bf16)")

_DEMO_EPILOG = """\
examples:
  anytalk demo
  anytalk demo --out-dir results/
  anytalk demo --format gif --tile 128     # a small animated preview
  anytalk demo --source my_cat.png --driving me_talking.mp4 --out-dir results/"""

_CONVERT_DESCRIPTION = """\
Convert a face-vid2vid checkpoint (.pth.tar / .pth), a LivePortrait weights folder
or a .safetensors checkpoint into one AnyTalk .safetensors file. The model family
is read from the weights unless --family names it; DST is written atomically and
is never overwritten unless --overwrite is given."""

_CONVERT_EPILOG = """\
examples:
  anytalk convert 00000189-checkpoint.pth.tar vox.safetensors
  anytalk convert pretrained_weights/liveportrait lp_human.safetensors
  anytalk convert pretrained_weights/liveportrait_animals lp_animal.safetensors \\
      --family liveportrait-animal --overwrite"""

_ANIMATE_DESCRIPTION = """\
Animate a portrait image with the motion of a driving video and write a video file.
By default the motion is relative to the first driving frame (the portrait keeps its
own pose and follows the driver's changes); --absolute copies the driver's pose and
expression. --audio drives the mouth from speech with the checkpoint's audio-to-motion
part (with --driving too: head pose from the video, expression from the audio) and puts
the sound in OUT. OUT is never overwritten unless --overwrite is given."""

_ANIMATE_EPILOG = """\
examples:
  anytalk animate --source portrait.png --driving driving.mp4 \\
      --checkpoint vox.safetensors --out result.mp4
  anytalk animate --source photo.jpg --driving talk.webm --checkpoint pretrained_weights/liveportrait \\
      --crop auto --driving-crop tracked --paste-back --smooth 0.3 --out talk.mp4
  anytalk animate --source cat.png --driving driving.mp4 --checkpoint lp_animal.safetensors \\
      --family liveportrait-animal --device cuda --precision fp16 --chunk 16 --out cat.gif
  anytalk animate --source portrait.png --audio speech.wav --checkpoint demo.safetensors --out talk.mp4"""


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    parser = OneLineErrorParser(prog="anytalk", description=_MAIN_DESCRIPTION, epilog=_MAIN_EPILOG,
                                formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"anytalk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("convert", help="convert a face-vid2vid / LivePortrait checkpoint to AnyTalk .safetensors",
                       description=_CONVERT_DESCRIPTION, epilog=_CONVERT_EPILOG, formatter_class=fmt)
    p.add_argument("src", help="checkpoint file (.pth.tar, .pth, .safetensors) or LivePortrait folder")
    p.add_argument("dst", help="output .safetensors path (never overwritten unless --overwrite)")
    p.add_argument("--family", default="auto",
                   help="auto (read from the weights), face-vid2vid, liveportrait-human or liveportrait-animal")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)

    a = sub.add_parser("animate", help="animate a portrait with the motion of a driving video and/or speech",
                       description=_ANIMATE_DESCRIPTION, epilog=_ANIMATE_EPILOG, formatter_class=fmt)
    a.add_argument("--source", required=True, help="portrait image (any Pillow format)")
    a.add_argument("--driving", default=None, help="driving video (mp4, webm, gif, ...)")
    a.add_argument("--audio", default=None, help="speech (wav, mp3, flac, m4a, or a video's sound) that drives the "
                                                 "mouth; needs a checkpoint with an audio-to-motion part")
    a.add_argument("--fps", type=finite, default=25.0, help="frame rate of the output with --audio alone")
    a.add_argument("--checkpoint", required=True, help="AnyTalk .safetensors, face-vid2vid .pth.tar or LivePortrait folder")
    a.add_argument("--out", required=True, help="output .mp4, .webm or .gif (never overwritten unless --overwrite)")
    a.add_argument("--family", default="auto", help="auto, face-vid2vid, liveportrait-human or liveportrait-animal")
    mode = a.add_mutually_exclusive_group()
    mode.add_argument("--relative", action="store_true", help="motion relative to the first driving frame (default)")
    mode.add_argument("--absolute", action="store_true", help="the driving pose and expression as they are")
    a.add_argument("--adapt-scale", action="store_true", help="relative mode: scale motion by face size")
    a.add_argument("--pose-strength", type=finite, default=1.0,
                   help="multiplies the head rotation taken from the driver: 0 keeps the portrait's pose, "
                        "0.5 half the turn, 1 all of it")
    a.add_argument("--expression-strength", type=finite, default=1.0,
                   help="multiplies the expression (mouth, eyes, brows) taken from the driver or the audio: "
                        "0 keeps the portrait's face, above 1 exaggerates")
    a.add_argument("--translation-strength", type=finite, default=1.0,
                   help="multiplies the head's movement across the picture: 0 keeps the head in place")
    a.add_argument("--smooth", type=finite, default=0.0, help="temporal smoothing of the motion, 0 (off) to 1")
    a.add_argument("--crop", default="full", help="source crop: full (the whole picture), auto (find the head; "
                                                  "says which detector found it; framed as the checkpoint's "
                                                  "family was trained) or X,Y,W,H in pixels")
    a.add_argument("--driving-crop", default="full",
                   help="driving crop: full, auto (the head's square in the first frame, kept for every frame), "
                        "tracked (the head followed: detected every --track-every frames, smoothed in between) "
                        "or X,Y,W,H")
    a.add_argument("--track-every", type=positive_int, default=5, metavar="K",
                   help="--driving-crop tracked: look for the head every K frames (1 = every frame)")
    a.add_argument("--paste-back", action="store_true", help="paste the animated crop back into the full source")
    a.add_argument("--upscale", type=positive_int, default=None, metavar="PX",
                   help="write the frames enlarged to PX x PX for viewing (nearest-neighbour, like the demo's "
                        "--tile): an upscale of the model's frames, it adds no detail; default: the model's size")
    a.add_argument("--chunk", type=positive_int, default=8, help="frames per chunk (bounds memory)")
    a.add_argument("--memory", choices=("lean", "fast"), default="lean",
                   help="lean: freed memory goes back at once (lowest peak); fast: kept for reuse (README)")
    a.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=_PRECISION_HELP)
    a.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=_animate)

    d = sub.add_parser("demo", help="animate the bundled cartoon animal with the bundled driving clip",
                       description=_DEMO_DESCRIPTION, epilog=_DEMO_EPILOG, formatter_class=fmt)
    d.add_argument("--out-dir", default=".", help="folder for the video and the contact sheet (created if missing; "
                                                  "files in it are never overwritten)")
    d.add_argument("--checkpoint", default=None, help="model to use instead of assets/demo/anytalk_demo.safetensors")
    d.add_argument("--source", default=None, help="portrait to use instead of the bundled cartoon animal")
    d.add_argument("--driving", default=None, help="driving video to use instead of the bundled clip")
    d.add_argument("--format", choices=("mp4", "webm", "gif"), default="mp4", help="video format")
    d.add_argument("--tile", type=positive_int, default=256,
                   help="pixel size of each panel of the video (the model's frames enlarged: no added detail)")
    d.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=_PRECISION_HELP)
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)
    return parser


def _with_hint(exc: BaseException) -> str:
    """The error's message, plus the README section that fixes it where there is one."""
    import torch

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if (oom and isinstance(exc, oom)) or "out of memory" in message.lower():
        return (f"out of memory ({message}); lower --chunk, use --precision bf16/fp16 on a GPU, or --device cpu "
                "(README.md, Troubleshooting: out of memory on long clips)")
    return message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, OSError, RuntimeError) as exc:
        print(f"anytalk: error: {_with_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anytalk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
