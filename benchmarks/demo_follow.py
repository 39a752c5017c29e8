"""Does the demo follow its driver? Head pose and mouth of the result against the driving clip (not a test).

    python benchmarks/demo_follow.py [CHECKPOINT] [--source IMG] [--threads 1]

Runs the demo (the bundled source unless another is named) at the model's own size on two drivers: the bundled
clip (head turn, nod, tilt, talking) for the head pose, and the same talking face held still for the mouth.
Both the driving frames and the results are read by the independent synthetic annotator (anytalk_eval.following,
never the model's own motion estimator): per angle, Pearson r between the driver's and the result's change from
the first frame and the gain (1 = the whole motion arrives, 0 = a still picture); for the mouth, r between the
two mouths' activity. Ground truth renders give gains 1.0 / 1.0 / 0.87 and mouth r 0.98 (the annotator's own
limits). Then how visibly the mouth opens on the still driver (``mouth_opening``: the mean absolute difference of
the result's mouth box between the most-open and most-closed jaw frames): driven by the video and by its audio alone. tests/test_demo.py holds the shipped demo to this.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from anytalk_eval.following import demo_following, format_following  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="default: the bundled demo model")
    parser.add_argument("--source")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(format_following(*demo_following(args.checkpoint, args.source, audio=True)))


if __name__ == "__main__":
    main()
