"""``anytalk-train CONFIG [--resume | --resume-from CHECKPOINT] [--export [--out PATH]] [key=value ...]``.

Examples::

    anytalk-train training/configs/smoke.toml
    anytalk-train training/configs/stage1.toml data.sources.0.path=/data/vox perceptual.vgg19_weights=vgg19.pth
    anytalk-train training/configs/stage1.toml --resume            # continue runs/<name> from its last checkpoint
    torchrun --nproc_per_node 8 -m anytalk_training.cli training/configs/stage1.toml
    anytalk-train training/configs/smoke.toml --export --out demo.safetensors   # inference checkpoint of the last state
    anytalk-train training/configs/audio2motion.toml model.init_from=vox.safetensors data.sources.0.path=/data/talking
    anytalk-train training/configs/audio2motion_demo.toml model.init_from=assets/demo/anytalk_demo.safetensors

Every problem found before training (bad config key, missing data folder, missing or corrupt weights or
checkpoint) is printed as one ``anytalk-train: error: ...`` line with exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from anytalk_app.args import OneLineErrorParser

EXIT_SETUP = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="anytalk-train", description="Train AnyTalk (face-vid2vid family) talking-head models, or their audio-to-motion part (task = \"audio2motion\").",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="examples:" + __doc__.split("Examples::")[1].replace("``", "'"))
    p.add_argument("config", help="TOML config (see training/configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.batch_size=8")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its checkpoints/last.safetensors")
    p.add_argument("--resume-from", metavar="CHECKPOINT", default=None,
                   help="continue from this training checkpoint (e.g. checkpoints/epoch_0010.safetensors) or a compact "
                        "snapshot committed to a repository (training/snapshot.py)")
    p.add_argument("--export", action="store_true",
                   help="only export the inference checkpoint of the run's last training state and exit")
    p.add_argument("--out", metavar="PATH", default=None,
                   help="with --export: where to write it (default <run>/model.safetensors, never overwritten)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options and key=value overrides in any order
    overrides = list(args.overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        print(f"anytalk-train: error: unexpected argument {bad[0]!r} (overrides are key=value)", file=sys.stderr)
        return EXIT_SETUP
    from .config import load_config, public
    from .data import DataError
    from . import trainer as talking_head
    from .trainer import SETUP_ERRORS

    try:
        config = load_config(args.config, overrides)
        if args.print_config:
            import json

            print(json.dumps(public(config), indent=2))
            return 0
        resume = args.resume_from or args.resume
        trainer_class = talking_head.Trainer
        if config.get("task") == "audio2motion":  # audio-to-motion training (training/audio2motion.py)
            from . import audio2motion as a2m

            trainer_class = a2m.AudioMotionTrainer
        if args.export:
            path = trainer_class.export_from_checkpoint(config, args.resume_from, args.out)
            if path:
                print(path)
            return 0
        trainer = trainer_class(config, resume=resume)
    except SETUP_ERRORS as exc:
        print(f"anytalk-train: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    try:
        result = trainer.fit()
    except DataError as exc:
        print(f"anytalk-train: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("anytalk-train: stopped without saving (second interrupt)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        trainer.close()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if result.get("interrupted"):
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
