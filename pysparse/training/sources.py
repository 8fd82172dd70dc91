"""Hand images (and images without hands) from registry packages, grouped by source.

The dense model is the teacher and labels every image itself, so any picture of a hand is
usable: real photos, video frames and drawings. Sources are kept whole on one side of the
split: the training split and the validation split never share a person, a drawing style
or a background photo (docs/pruning.md lists every source and its licence).

| source | what | package (licence) | split |
|---|---|---|---|
| fingerpose | one person's hand: 3 photos, 43 GIF frames | npm fingerpose 0.1.0 (MIT) | train |
| group-photos-a | 9 hands of other people in 4 group photos | npm @vladmandic/face-api 1.7.15 (MIT), sample1, 4, 5, 6 | train |
| noto-emoji | 31 hand gestures x 6 skin tones, drawn | Debian fonts-noto-color-emoji (OFL 1.1) | train |
| openmoji | 31 hand gestures x 6 skin tones in a flat style with black outlines | npm openmoji 17.0.0 (CC BY-SA 4.0) | train |
| openmoji-line | the same gestures as black line drawings | npm openmoji 17.0.0 (CC BY-SA 4.0) | train |
| backgrounds | wallpapers and a portrait: images without hands | Debian gnome-backgrounds (CC BY-SA 3.0), matplotlib's grace_hopper.jpg (public domain) | train |
| group-photos-b | 9 hands of other people in 2 other group photos | npm @vladmandic/face-api 1.7.15 (MIT), sample2, 3 | validation |
| human-samples | 10 small, half-hidden hands in a party photo | npm @vladmandic/human 3.3.6 (MIT) | validation |
| twemoji | 31 hand gestures x 6 skin tones in another drawing style | npm @twemoji/svg 15.0.0 (CC BY 4.0 graphics) | validation |
| symbola | line-drawn hands and pointing hands | Debian fonts-symbola (free use) | validation |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import assets

NOTO_EMOJI = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SYMBOLA = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
GNOME_BACKGROUNDS = Path("/usr/share/backgrounds/gnome")
HUMAN_SAMPLES = "@vladmandic/human/assets/samples.jpg"
FACE_API_DEMO = "@vladmandic/face-api/demo"
TWEMOJI = "@twemoji/svg"
OPENMOJI = "openmoji"
FINGERPOSE_GIF = "fingerpose/assets/fingers-lq.gif"
FINGERPOSE_PHOTOS = ("hand_nocurl.jpg", "hand_halfcurl.jpg", "hand_fullcurl.jpg")
GIF_HAND_BOX = (225.0, 135.0, 150.0)  # centre x, y and side of a first guess at the GIF's hand

# Hand emoji (code points); the skin tone modifiers follow.
HAND_EMOJI = (0x270B, 0x1F590, 0x1F44B, 0x1F91A, 0x1F44C, 0x270C, 0x1F91E, 0x1F91F, 0x1F918, 0x1F919,
              0x1F448, 0x1F449, 0x1F446, 0x1F447, 0x261D, 0x1F44D, 0x1F44E, 0x270A, 0x1F44A, 0x1F91B,
              0x1F91C, 0x1F596, 0x1F90F, 0x1F90C, 0x1FAF0, 0x1FAF5, 0x1FAF1, 0x1FAF2, 0x1FAF3, 0x1FAF4,
              0x270D)
SKIN_TONES = (None, 0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF)
# Symbola's hands: the emoji it has plus its pointing and writing hands.
SYMBOLA_HANDS = (0x270B, 0x1F590, 0x1F44B, 0x1F44C, 0x270C, 0x1F448, 0x1F449, 0x1F446, 0x1F447, 0x261D,
                 0x1F44D, 0x1F44E, 0x270A, 0x1F44A, 0x1F596, 0x1F918, 0x270D, 0x261A, 0x261B, 0x261C,
                 0x261E, 0x261F, 0x1F591, 0x1F592, 0x1F593, 0x1F594, 0x1F595, 0x1F597, 0x1F598,
                 0x1F599, 0x1F59A, 0x1F59B, 0x1F59C, 0x1F59D, 0x1F59E, 0x1F59F, 0x1F5A0, 0x1F5A1,
                 0x1F5A2, 0x1F5A3)
# Hands in @vladmandic/human's samples.jpg (1280x1158): centre x, y and the side of a square
# about twice the hand, picked by eye (the teacher re-centres them).
HUMAN_SAMPLE_HANDS = ((280, 712, 110), (295, 856, 110), (415, 810, 110), (602, 850, 100), (205, 790, 110),
                      (680, 722, 100), (690, 786, 110), (930, 742, 100), (905, 836, 100), (1110, 880, 110))


# Hands in @vladmandic/face-api's demo photos (1920 pixels wide): centre x, y and side,
# picked by eye like the above. Photos 2 and 3 are the validation split's.
GROUP_PHOTO_HANDS = {
    "sample1.jpg": ((920, 1170, 240), (1400, 1200, 220)),
    "sample4.jpg": ((300, 720, 240), (820, 520, 240), (840, 800, 260), (540, 220, 220), (1240, 900, 240)),
    "sample5.jpg": ((1240, 1180, 260),),
    "sample6.jpg": ((1380, 1400, 300),),
    "sample2.jpg": ((300, 370, 240), (880, 1110, 260), (380, 1180, 240), (1300, 770, 260), (1400, 150, 240)),
    "sample3.jpg": ((740, 900, 280), (500, 540, 260), (1660, 1220, 260), (1100, 1310, 240)),
}


@dataclass
class Item:
    """One picture: `image` RGB, or RGBA for a cut-out drawn on a new background; `box`
    (cx, cy, side): a first guess at the hand's square, None for an image without hands."""
    name: str
    image: "Image.Image"
    box: tuple | None


@dataclass
class Source:
    name: str
    split: str  # "train" or "validation"
    kind: str  # "photo", "drawing" or "background"
    licence: str
    items: list = field(default_factory=list)


def _glyphs(font_path: Path, size: int, codes, tones=(None,), color: bool = False):
    """Each glyph that the font has, rendered alone on a transparent square (RGBA)."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.truetype(str(font_path), size)
    missing = font.getbbox("\U0010FFFD")  # how a glyph the font lacks looks
    out = []
    for code in codes:
        for tone in tones:
            text = chr(code) + (chr(tone) if tone else "")
            box = font.getbbox(text)
            if box == missing or box[2] - box[0] < 8:
                continue
            side = int(max(box[2] - box[0], box[3] - box[1]) * 1.4) + 8
            im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
            d = ImageDraw.Draw(im)
            x = (side - (box[2] - box[0])) / 2 - box[0]
            y = (side - (box[3] - box[1])) / 2 - box[1]
            if color:
                d.text((x, y), text, font=font, embedded_color=True)
            else:
                d.text((x, y), text, font=font, fill=(0, 0, 0, 255))
            if im.getchannel("A").getbbox() is None:
                continue
            out.append((f"U+{code:X}" + (f"-{tone:X}" if tone else ""), im))
    return out


def _cutout_box(im) -> tuple:
    l, t, r, b = im.getchannel("A").getbbox()
    return ((l + r) / 2, (t + b) / 2, 1.25 * max(r - l, b - t))


def fingerpose() -> Source:
    from PIL import Image, ImageSequence
    s = Source("fingerpose", "train", "photo", "MIT (npm fingerpose 0.1.0)")
    for p in FINGERPOSE_PHOTOS:
        img = Image.open(assets.photo_path(p)).convert("RGB")
        s.items.append(Item(p, img, (img.width / 2, img.height / 2, float(max(img.size)))))
    gif = Image.open(assets.node_modules() / FINGERPOSE_GIF)
    for i, frame in enumerate(ImageSequence.Iterator(gif)):
        s.items.append(Item(f"fingers-lq.gif#{i}", frame.convert("RGB"), GIF_HAND_BOX))
    return s


def group_photos(name: str, split: str, photos) -> Source:
    from PIL import Image
    s = Source(name, split, "photo", "MIT (npm @vladmandic/face-api 1.7.15)")
    for photo in photos:
        img = Image.open(assets.node_modules() / FACE_API_DEMO / photo).convert("RGB")
        for i, box in enumerate(GROUP_PHOTO_HANDS[photo]):
            s.items.append(Item(f"{photo}#hand{i}", img, tuple(float(v) for v in box)))
    return s


def _svg_emoji(source: Source, folder: Path, prefix: str, tones, upper: bool = False) -> Source:
    """The hand emoji of an SVG emoji set (one file per code point and tone), rasterised by
    CairoSVG at 160 pixels on a transparent 224 x 224 canvas."""
    import io

    import cairosvg
    from PIL import Image
    for code in HAND_EMOJI:
        for tone in tones:
            name = f"{code:x}" + (f"-{tone:x}" if tone else "")
            path = folder / f"{name.upper() if upper else name}.svg"
            if not path.exists():
                continue
            png = cairosvg.svg2png(url=str(path), output_width=160, output_height=160)
            im = Image.open(io.BytesIO(png)).convert("RGBA")
            pad = Image.new("RGBA", (224, 224), (0, 0, 0, 0))
            pad.paste(im, (32, 32), im)
            source.items.append(Item(f"{prefix} {name}", pad, _cutout_box(pad)))
    return source


def twemoji() -> Source:
    """Twemoji's hand emoji in every skin tone."""
    s = Source("twemoji", "validation", "drawing", "CC BY 4.0 (npm @twemoji/svg 15.0.0)")
    return _svg_emoji(s, assets.node_modules() / TWEMOJI, "twemoji", SKIN_TONES)


def openmoji() -> Source:
    """OpenMoji's hand emoji in every skin tone: flat colours inside black outlines."""
    s = Source("openmoji", "train", "drawing", "CC BY-SA 4.0 (npm openmoji 17.0.0)")
    return _svg_emoji(s, assets.node_modules() / OPENMOJI / "color" / "svg", "openmoji", SKIN_TONES, upper=True)


def openmoji_line() -> Source:
    """OpenMoji's hand emoji as black line drawings."""
    s = Source("openmoji-line", "train", "drawing", "CC BY-SA 4.0 (npm openmoji 17.0.0)")
    return _svg_emoji(s, assets.node_modules() / OPENMOJI / "black" / "svg", "openmoji-line", (None,), upper=True)


def noto_emoji() -> Source:
    s = Source("noto-emoji", "train", "drawing", "OFL 1.1 (Debian fonts-noto-color-emoji)")
    for name, im in _glyphs(NOTO_EMOJI, 109, HAND_EMOJI, SKIN_TONES, color=True):
        s.items.append(Item("noto " + name, im, _cutout_box(im)))
    return s


def symbola() -> Source:
    s = Source("symbola", "validation", "drawing", "free for any use (Debian fonts-symbola)")
    for name, im in _glyphs(SYMBOLA, 160, SYMBOLA_HANDS):
        s.items.append(Item("symbola " + name, im, _cutout_box(im)))
    return s


def human_samples() -> Source:
    from PIL import Image
    s = Source("human-samples", "validation", "photo", "MIT (npm @vladmandic/human 3.3.6)")
    img = Image.open(assets.node_modules() / HUMAN_SAMPLES).convert("RGB")
    for i, box in enumerate(HUMAN_SAMPLE_HANDS):
        s.items.append(Item(f"samples.jpg#hand{i}", img, tuple(float(v) for v in box)))
    return s


def backgrounds() -> Source:
    """Images without hands: abstract wallpapers and one portrait photo."""
    from PIL import Image
    import matplotlib
    s = Source("backgrounds", "train", "background",
               "CC BY-SA 3.0 and others (Debian gnome-backgrounds); public domain (matplotlib's grace_hopper.jpg)")
    for p in sorted(GNOME_BACKGROUNDS.glob("*")):
        if p.suffix.lower() in (".webp", ".jpg", ".jpeg", ".png"):
            im = Image.open(p).convert("RGB")
            im.thumbnail((1024, 1024))
            s.items.append(Item(p.name, im, None))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    s.items.append(Item(hopper.name, Image.open(hopper).convert("RGB"), None))
    return s


def train_sources() -> list[Source]:
    return [fingerpose(), group_photos("group-photos-a", "train", ("sample1.jpg", "sample4.jpg", "sample5.jpg",
                                                                  "sample6.jpg")),
            noto_emoji(), openmoji(), openmoji_line(), backgrounds()]


def all_sources() -> list[Source]:
    return train_sources() + [group_photos("group-photos-b", "validation", ("sample2.jpg", "sample3.jpg")),
                              human_samples(), twemoji(), symbola()]


def split(sources: list[Source], which: str) -> list[Source]:
    return [s for s in sources if s.split == which]


def check_disjoint(sources: list[Source]) -> None:
    """No source on both sides (by construction: a source has one split)."""
    names = [s.name for s in sources]
    if len(names) != len(set(names)):
        raise ValueError(f"a source is listed twice: {names}")
