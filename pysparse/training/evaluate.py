"""How closely a candidate hand landmark model follows the dense one.

    pysparse evaluate models/hand_landmark_full.tflite CANDIDATE.spnn ... [--images DIR]

For every crop: the mean distance of the 21 landmarks (x, y) to the dense model's, as a
fraction of hand size (the longer side of the dense landmarks' box), over the crops where
the dense model sees a hand; whether presence (> 0.5) agrees with the dense model's, over
every crop; and whether handedness (> 0.5) agrees, over the crops with a hand. MediaPipe's dense `hand_landmark_lite` is added
as the yardstick when it is installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import augment as A

OUTPUT_NAMES = ("landmarks", "presence", "handedness", "world")  # the hand landmark models' outputs, in order
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


@dataclass
class Outputs:
    landmarks: np.ndarray  # [N, 21, 3], pixels of the 224x224 crop
    presence: np.ndarray  # [N]
    handedness: np.ndarray  # [N]
    world: np.ndarray  # [N, 21, 3]

    @classmethod
    def from_arrays(cls, arrays) -> "Outputs":
        lm, pres, hand, world = (np.asarray(a, np.float32) for a in arrays)
        n = lm.shape[0]
        return cls(lm.reshape(n, 21, 3), pres.reshape(n), hand.reshape(n), world.reshape(n, 21, 3))

    def as_dict(self) -> dict:
        return {"landmarks": self.landmarks, "presence": self.presence[:, None],
                "handedness": self.handedness[:, None], "world": self.world}


def module_outputs(module, x: np.ndarray, batch: int = 32, device=None) -> Outputs:
    """A torch hand landmark module run on float NCHW inputs `x`, `batch` at a time."""
    import torch
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch])
            if device is not None:
                xb = xb.to(device).contiguous(memory_format=torch.channels_last)
            outs.append([y.cpu().numpy() for y in module(xb)])
    return Outputs.from_arrays([np.concatenate(o) for o in zip(*outs)])


def run_graph(graph, images: np.ndarray, batch: int = 16) -> Outputs:
    """A hand landmark graph on uint8 crops [N, 224, 224, 3]: torch when installed (held to the
    numpy reference within 1e-4 by the tests), else the numpy reference."""
    x = A.to_input(images)
    try:
        from ..torch_module import GraphModule
    except ImportError:
        from .. import reference
        name = graph.inputs[0]
        outs = [[reference.run(graph, {name: x[i:i + 1]})[o] for o in graph.outputs] for i in range(len(x))]
        return Outputs.from_arrays([np.concatenate(o) for o in zip(*outs)])
    return module_outputs(GraphModule(graph).eval(), x, batch)


def landmark_error(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per crop: mean distance of the 21 (x, y) landmarks to the reference's, as a fraction of
    hand size (the longer side of the reference landmarks' box)."""
    dist = np.linalg.norm(pred[..., :2] - ref[..., :2], axis=-1).mean(axis=-1)
    size = np.ptp(ref[..., :2], axis=-2).max(axis=-1)
    return dist / np.maximum(size, 1e-6)


def compare(dense: Outputs, cand: Outputs, names=None, by_source: bool = False) -> dict:
    """Agreement of `cand` with `dense` on the same crops."""
    hand = dense.presence > 0.5
    err = landmark_error(cand.landmarks, dense.landmarks)
    pres = (cand.presence > 0.5) == hand
    handed = (cand.handedness > 0.5) == (dense.handedness > 0.5)
    e = err[hand] if hand.any() else err
    handed = handed[hand] if hand.any() else handed  # which hand it is, where there is one
    q = {"crops": int(len(err)), "crops_with_hand": int(hand.sum()),
         "mean_landmark_error": float(e.mean()), "p90_landmark_error": float(np.percentile(e, 90)),
         "presence_agreement": float(pres.mean()), "handedness_agreement": float(handed.mean())}
    if by_source and names is not None:
        src = np.array([n.split(":")[0] for n in names])
        q["by_source"] = {s: compare(_take(dense, src == s), _take(cand, src == s)) for s in sorted(set(src))}
    return q


def _take(o: Outputs, keep) -> Outputs:
    return Outputs(o.landmarks[keep], o.presence[keep], o.handedness[keep], o.world[keep])


def line(name: str, q: dict) -> list[str]:
    return [name, f"{q['mean_landmark_error']:.1%}", f"{q['p90_landmark_error']:.1%}",
            f"{q['presence_agreement']:.0%}", f"{q['handedness_agreement']:.0%}"]


def image_crops(teacher, paths) -> tuple[np.ndarray, list[str]]:
    """Crops of the user's images: a 224x224 image is taken as a crop already; any other is
    searched for its hand with the dense model (from the centred square of the whole image)."""
    from PIL import Image
    crops, names = [], []
    for p in paths:
        img = Image.open(p).convert("RGB")
        if img.size == (A.SIZE, A.SIZE):
            crops.append(np.asarray(img))
        else:
            roi = A.find_roi(teacher, img, (img.width / 2, img.height / 2, float(max(img.size))))
            crops.append(np.asarray(A.crop(img, *roi)))
        names.append(f"{Path(p).parent.name}: {Path(p).name}")
    return np.stack(crops), names


def image_paths(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return paths
