"""`pysparse distill -o OUT.spnn`: a sparse hand landmark model distilled from the dense one."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from .. import assets
    p = sub.add_parser("distill", help="prune a hand landmark model and distil it from the dense one",
                       description="Per-layer sparsity from sensitivity at a budget of effective multiply-adds, "
                                   "calibrated pruning, then fine-tuning against the dense model's outputs and "
                                   "features on augmented hand images of the training sources; evaluated on "
                                   "sources never trained on. Runs on a CUDA GPU when one is present "
                                   "(docs/pruning.md).")
    p.add_argument("-o", "--output", type=Path, required=True, help="the pruned model (.spnn, fp16); the report, "
                   "log and checkpoint are written beside it")
    p.add_argument("--model", default="hand_landmark_full", choices=("hand_landmark_full", "hand_landmark_lite"))
    p.add_argument("--dense", type=Path, default=None, help="the dense model file (default: MODEL from models/)")
    p.add_argument("--sparsity", type=float, default=0.87,
                   help="share of the pruned layers' multiply-adds removed (default 0.87)")
    p.add_argument("--uniform", action="store_true", help="the same sparsity in every layer, not per layer")
    p.add_argument("--block", type=int, choices=(1, 2, 4), default=1)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: 2000 on CPU, 20000 on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: 16 on CPU, 64 on CUDA)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--feature-weight", type=float, default=0.05, help="weight of the feature loss")
    p.add_argument("--logit-weight", type=float, default=0.05,
                   help="weight of the presence and handedness logits' loss")
    p.add_argument("--logit-loss", choices=("smooth-l1", "bce"), default="smooth-l1",
                   help="how the logits are matched: smooth L1 on the logits, or cross-entropy "
                        "against the teacher's probabilities")
    p.add_argument("--landmark-loss", choices=("crop", "hand"), default="crop",
                   help="how the landmarks are matched: in units of the crop on every image, or in units of "
                        "the dense model's hand size, each image weighted by its presence score")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights (decay such as 0.999) and ship it "
                        "in place of the last step's weights (default 0: none)")
    p.add_argument("--pool", type=int, default=None,
                   help="augmented training images (default: 6000 on CPU, 30000 on CUDA; cached)")
    p.add_argument("--calibration", type=int, default=64, help="images for calibrated pruning")
    p.add_argument("--sensitivity-images", type=int, default=6, help="images for the sensitivity analysis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="layers left dense")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="layers pruned that the default rule leaves dense (such as 1x1 layers with few weights "
                        "on large planes)")
    p.add_argument("--prune-heads", action="store_true",
                   help="prune the fully connected output heads too (default: the 1x1 convolutions only)")
    p.add_argument("--eval-every", type=int, default=200, metavar="STEPS",
                   help="print the validation figures every STEPS steps (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=200, metavar="STEPS")
    p.add_argument("--resume", action="store_true",
                   help="go on from OUTPUT's checkpoint; --steps and --lr shape the schedule from there (a longer "
                        "or shorter run, or a second phase with other loss weights)")
    p.add_argument("--start-from", type=Path, default=None, metavar="MODEL",
                   help="begin from a model of an earlier run instead of calibrated pruning (its .ckpt.pt, the "
                        ".spnn with its checkpoint beside it, or any .spnn of this model on its own, e.g. a "
                        "shipped one), pruning it further to --sparsity while it trains where it is less sparse")
    p.add_argument("--ramp", type=int, default=1000, metavar="STEPS",
                   help="with --start-from: the steps over which the sparsity rises (default 1000)")
    p.add_argument("--cache", type=Path, default=assets.ROOT / "build" / "distill-cache")
    p.add_argument("--smoke", action="store_true", help="a few steps on a few images: checks the pipeline")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training import distill
    cuda = distill.device_of(args.device).type == "cuda"
    args.steps = args.steps if args.steps is not None else (20000 if cuda else 2000)
    args.batch = args.batch if args.batch is not None else (64 if cuda else 16)
    args.pool = args.pool if args.pool is not None else (30000 if cuda else 6000)
    return distill.run(args)
