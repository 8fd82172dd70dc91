"""Crops framed the way a hand tracker frames them, and augmentation with breadth: rotation,
scale, offset and mirror flips; hands moved onto other backgrounds; skin tones; lighting,
colour, blur, noise and JPEG artefacts; images without hands."""
from __future__ import annotations

import io
import math

import numpy as np

SIZE = 224  # the hand landmark models' input
# Hand skeleton (MediaPipe's 21 landmarks) for the hand mask used when swapping backgrounds.
FINGERS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (0, 17, 18, 19, 20))
PALM = (0, 1, 5, 9, 13, 17)
# Skin colours from light to dark (sRGB), the targets of the skin tone shift.
SKIN = np.array([(250, 220, 196), (234, 192, 160), (210, 160, 120), (176, 120, 84), (128, 82, 52), (84, 52, 34)],
                np.float32)


def crop(img, cx: float, cy: float, side: float, angle: float = 0.0, flip: bool = False, size: int = SIZE):
    """The square of `side` pixels centred on (cx, cy), rotated by `angle` degrees, as a
    size x size image (bilinear; outside the image: transparent black)."""
    from PIL import Image
    s = side / size
    c, n = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    fx = -1.0 if flip else 1.0
    # output pixel (u, v) -> source (x, y): centre + R * S * (u - size/2, v - size/2)
    a, b = c * s * fx, -n * s
    d, e = n * s * fx, c * s
    h = size / 2.0
    coeffs = (a, b, cx - a * h - b * h, d, e, cy - d * h - e * h)
    return img.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 NCHW in [0, 1] (the models' input range)."""
    return (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()


def on_plain(img, grey: int = 255):
    """An RGBA cut-out on a plain background (RGB); RGB images as they are."""
    from PIL import Image
    if img.mode != "RGBA":
        return img
    out = Image.new("RGB", img.size, (grey, grey, grey))
    out.paste(img, (0, 0), img)
    return out


def find_roi(teacher, img, box: tuple) -> tuple:
    """(cx, cy, side) around the hand: crop, run the teacher, centre on its landmarks, repeat.
    Where the teacher sees no hand in the first crop, the first guess is kept."""
    cx, cy, side = box
    img = on_plain(img)
    for i in range(3):
        out = teacher(to_input(np.asarray(crop(img, cx, cy, side))[None]))
        if i == 0 and out["presence"][0, 0] < 0.5:
            return box
        lm = out["landmarks"][0, :, :2]  # in crop pixels
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        mid = (lo + hi) / 2 * side / SIZE
        cx, cy = cx - side / 2 + mid[0], cy - side / 2 + mid[1]
        side = 1.6 * float((hi - lo).max()) * side / SIZE
    return cx, cy, side


def hand_mask(landmarks: np.ndarray, size: int = SIZE):
    """A soft mask of the hand from its 21 landmarks: thick finger strokes and the palm."""
    from PIL import Image, ImageDraw, ImageFilter
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    pts = [tuple(map(float, p)) for p in landmarks[:, :2]]
    span = float(np.ptp(landmarks[:, :2], axis=0).max())
    width = max(4, int(0.16 * span))
    d.polygon([pts[i] for i in PALM], fill=255)
    for f in FINGERS:
        d.line([pts[i] for i in f], fill=255, width=width, joint="curve")
        for i in f:
            r = width / 2
            d.ellipse([pts[i][0] - r, pts[i][1] - r, pts[i][0] + r, pts[i][1] + r], fill=255)
    # the forearm below the wrist stays (MediaPipe's crops show it too)
    wrist, mid = np.array(pts[0]), np.array(pts[9])
    down = wrist + (wrist - mid) * 1.5
    d.line([tuple(wrist), tuple(down)], fill=255, width=int(width * 2.2))
    return m.filter(ImageFilter.GaussianBlur(max(1.0, width / 4)))


def random_background(rng, photos, size: int = SIZE):
    """A photo's random square (rotated, flipped), a colour gradient, a blotchy texture or a
    plain colour (a page or a screen: white or grey more often than not)."""
    from PIL import Image
    kind = rng.choice(4, p=(0.5, 0.15, 0.15, 0.2)) if photos else rng.integers(1, 4)
    if kind == 0:
        src = photos[rng.integers(len(photos))]
        side = rng.uniform(0.2, 1.0) * min(src.size)
        cx = rng.uniform(side / 2, src.size[0] - side / 2)
        cy = rng.uniform(side / 2, src.size[1] - side / 2)
        return crop(src, cx, cy, side, rng.uniform(-180, 180), bool(rng.integers(2)), size)
    if kind == 1:  # smooth colour gradient
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, size)[:, None, None]
        g = np.broadcast_to(a * (1 - t) + b * t, (size, size, 3))
        if rng.integers(2):
            g = g.transpose(1, 0, 2)
        return Image.fromarray(g.astype(np.uint8))
    if kind == 2:  # blotchy texture
        blobs = rng.uniform(0, 255, (int(rng.integers(3, 12)),) * 2 + (3,)).astype(np.uint8)
        return Image.fromarray(blobs).resize((size, size), Image.BICUBIC)
    grey = rng.uniform(100, 255)
    colour = np.full(3, grey) if rng.random() < 0.6 else rng.uniform(0, 255, 3)
    return Image.new("RGB", (size, size), tuple(int(c) for c in colour))


def skin_tone(rng, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The hand (mask, 0..1) recoloured towards a random skin colour, keeping its shading."""
    m = mask[..., None]
    w = m.sum()
    if w < 1:
        return a
    mean = (a * m).reshape(-1, 3).sum(axis=0) / w
    target = SKIN[rng.integers(len(SKIN))] * rng.uniform(0.9, 1.1, 3)
    ratio = target / np.maximum(mean, 1.0)
    return a * (1 - m) + np.clip(a * ratio, 0, 255) * m


def photometric(rng, out) -> np.ndarray:
    """Lighting, colour, blur, white balance, noise and JPEG artefacts (uint8 HWC)."""
    from PIL import Image, ImageEnhance, ImageFilter
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.5, 1.5))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.3, 1.6))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 2.0)))
    a = np.asarray(out, np.float32) * rng.uniform(0.8, 1.2, 3)  # white balance
    if rng.random() < 0.4:
        a = a + rng.normal(0, rng.uniform(2, 12), a.shape)
    a = np.clip(a, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=int(rng.integers(10, 60)))
        a = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return a


def framing(rng) -> tuple:
    """Scale, angle, flip and offset (fractions of the side) of one crop: mostly upright
    hands, sometimes any angle, framed from as tight as a tracker frames them (its region,
    twice the palm, is about 0.7x the 1.6x-landmarks square of `find_roi`) to looser."""
    scale = math.exp(rng.uniform(math.log(0.55), math.log(1.3)))
    angle = rng.normal(0, 25) if rng.random() < 0.8 else rng.uniform(-180, 180)
    return scale, angle, bool(rng.integers(2)), rng.normal(0, 0.08, 2)


def augment(rng, img, roi: tuple, photos, teacher_lm: np.ndarray | None):
    """One augmented 224x224 crop (uint8 HWC) of a hand. `img`: RGB photo, or RGBA cut-out
    (always drawn on a new background). `teacher_lm`: the hand's landmarks in the plain ROI
    crop of a photo, for the background swap and skin tone (None: neither)."""
    from PIL import Image
    cx, cy, side = roi
    scale, angle, flip, (dx, dy) = framing(rng)
    dx, dy = dx * side, dy * side
    out = crop(img, cx + dx, cy + dy, side * scale, angle, flip)
    if img.mode == "RGBA":
        bg = random_background(rng, photos)
        bg.paste(out, (0, 0), out)
        return photometric(rng, bg)
    if teacher_lm is not None:
        # the same transform applied to the plain crop's landmarks gives the hand's mask here
        mask = crop(hand_mask(teacher_lm), SIZE / 2 + dx * SIZE / side, SIZE / 2 + dy * SIZE / side,
                    SIZE * scale, angle, flip)
        if rng.random() < 0.5:
            a = skin_tone(rng, np.asarray(out, np.float32), np.asarray(mask, np.float32) / 255.0)
            out = Image.fromarray(a.astype(np.uint8))
        if rng.random() < 0.6:
            out = Image.composite(out, random_background(rng, photos), mask)
    return photometric(rng, out)


def negative(rng, photos) -> np.ndarray:
    """A 224x224 image without a hand."""
    return photometric(rng, random_background(rng, photos))

