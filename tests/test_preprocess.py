"""Pixel preprocessing recorded by `pysparse pack --input-*` in the metadata, and applied by
`pysparse run` as the JS runtime applies it (tests/node/preprocess.test.mjs)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pysparse import assets
from pysparse.cli import main
from pysparse.commands.run import load_image
from pysparse.format import read_spnn


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("preprocess") / "lite.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(out),
                 "--input-range=-1,1", "--input-mean", "0.5", "--input-std", "0.5,0.25,2",
                 "--input-resize", "letterbox"]) == 0
    return out


def test_pack_records_the_pixel_options_beside_the_known_input_facts(packed):
    meta = read_spnn(packed.read_bytes()).metadata["input"]
    assert meta["range"] == [-1.0, 1.0]
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.5, 0.25, 2.0]
    assert meta["resize"] == "letterbox"
    assert meta["shape"] == [1, 3, 224, 224] and meta["color"] == "RGB" and meta["name"] == "input_1"


def test_pack_without_the_flags_keeps_the_known_range(tmp_path):
    out = tmp_path / "plain.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(out)]) == 0
    meta = read_spnn(out.read_bytes()).metadata["input"]
    assert meta["range"] == [0.0, 1.0] and "mean" not in meta and "resize" not in meta


@pytest.mark.parametrize("flags, message", [
    (["--input-std", "1,0,1"], "std of 0"),
    (["--input-range", "1,1"], "must differ"),
])
def test_bad_pixel_options_are_one_line_errors(tmp_path, capsys, flags, message):
    out = tmp_path / "x.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_load_image_letterbox_mean_std(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (8, 4), (255, 0, 255)).save(path)
    x = load_image(path, (1, 3, 8, 8), [0, 1], mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 2.0], resize="letterbox")
    assert x.shape == (1, 3, 8, 8)
    # rows 0-1 and 6-7 are the black bars, rows 2-5 the image
    np.testing.assert_allclose(x[0, :, 0, 0], [-1.0, -2.0, -0.25])
    np.testing.assert_allclose(x[0, :, 4, 4], [1.0, -2.0, 0.25])
    np.testing.assert_allclose(x[0, 0, :, 3], [-1, -1, 1, 1, 1, 1, -1, -1])
    stretched = load_image(path, (1, 3, 8, 8), [0, 1])
    assert np.all(stretched[0, 0] == 1.0)


def test_run_applies_the_metadata(packed, tmp_path, capsys):
    photo = assets.photo_path("hand_nocurl.jpg")
    assert main(["run", str(packed), "--input", str(photo), "--json"]) == 0
    assert '"Identity"' in capsys.readouterr().out
