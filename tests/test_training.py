"""pysparse.training: hand image sources split by source, augmentation, per-layer sparsity,
the distillation loss, evaluation against the dense model, and the two commands."""
import json
import shutil

import numpy as np
import pytest
import torch

from pysparse import assets
from pysparse.cli import main
from pysparse.format.reader import read_spnn
from pysparse.prune import allocate
from pysparse.torch_module import GraphModule
from pysparse.training import augment as A
from pysparse.training import evaluate as E
from pysparse.training import sources as S


@pytest.fixture(scope="module")
def sources():
    return S.all_sources()


@pytest.fixture(scope="module")
def lite():
    from pysparse.importers import load_model
    from pysparse.passes import optimize
    return optimize(load_model(assets.model_path("hand_landmark_lite.tflite")))


def test_sources_are_split_whole_and_validation_has_other_people_and_styles(sources):
    S.check_disjoint(sources)
    train, val = S.split(sources, "train"), S.split(sources, "validation")
    assert all(s.items for s in sources)
    assert {s.kind for s in train} == {"photo", "drawing", "background"}
    assert {s.kind for s in val} == {"photo", "drawing"}
    # no picture on both sides: the group photos are divided by photo (the people in them)
    def pictures(ss):
        return {it.name.split("#")[0] for s in ss for it in s.items}
    assert not pictures(train) & pictures(val)
    assert sum(len(s.items) for s in val if s.kind == "photo") >= 15
    assert all(s.licence for s in sources)
    noto = next(s for s in sources if s.name == "noto-emoji")
    assert len(noto.items) >= 100 and all(it.image.mode == "RGBA" for it in noto.items)


def test_crops_are_square_and_mirror_as_asked():
    from PIL import Image
    yy, xx = np.mgrid[0:100, 0:120]
    img = Image.fromarray(np.stack([2 * xx, 2 * yy, np.zeros_like(xx)], axis=2).astype(np.uint8))  # R = 2x, G = 2y
    a = np.asarray(A.crop(img, 60.0, 50.0, 40.0)).astype(int)
    assert a.shape == (A.SIZE, A.SIZE, 3)
    # the crop's centre is the source's (60, 50), its width 40 source pixels; a flip mirrors x
    assert abs(a[112, 112, 0] - 120) <= 2 and abs(a[112, 112, 1] - 100) <= 2
    assert abs(a[112, 0, 0] - 80) <= 2 and abs(a[112, 223, 0] - 160) <= 2
    f = np.asarray(A.crop(img, 60.0, 50.0, 40.0, 0, True)).astype(int)
    assert abs(f[112, 0, 0] - 160) <= 2 and abs(f[112, 223, 0] - 80) <= 2


def test_augmentation_of_photos_cutouts_and_images_without_hands(sources):
    rng = np.random.default_rng(0)
    fp = next(s for s in sources if s.name == "fingerpose").items[0]
    noto = next(s for s in sources if s.name == "noto-emoji").items[0]
    photos = [it.image for it in next(s for s in sources if s.name == "backgrounds").items]
    lm = np.stack([np.linspace(60, 160, 21), np.linspace(40, 190, 21), np.zeros(21)], axis=1)
    outs = [A.augment(rng, fp.image, fp.box, photos, lm) for _ in range(4)]
    outs += [A.augment(rng, noto.image, noto.box, photos, None) for _ in range(4)]
    outs += [A.negative(rng, photos) for _ in range(2)]
    for o in outs:
        assert o.shape == (A.SIZE, A.SIZE, 3) and o.dtype == np.uint8
    assert len({o.tobytes() for o in outs}) == len(outs)  # every draw differs
    # the skin tone shift recolours the masked pixels only
    a = np.full((4, 4, 3), 100.0)
    mask = np.zeros((4, 4)); mask[:2] = 1
    b = A.skin_tone(rng, a, mask)
    assert np.all(b[2:] == 100) and not np.allclose(b[:2], 100)


def test_allocation_meets_the_budget_and_keeps_sensitive_layers_denser():
    macs = {"big": 1000, "small": 100, "touchy": 1000}
    grid = np.linspace(0, 0.99, 200)
    curves = {"big": (grid, -np.log1p(-grid)), "small": (grid, -np.log1p(-grid)),
              "touchy": (grid, 10 * -np.log1p(-grid))}
    s = allocate.allocate(macs, curves, 0.8, floor=0.5, ceiling=0.97)
    cost = sum(macs[n] * (1 - s[n]) for n in macs)
    assert cost <= 0.2 * sum(macs.values()) + 1e-6
    assert s["touchy"] < s["big"] and all(0.5 <= v <= 0.97 for v in s.values())
    with pytest.raises(ValueError):
        allocate.allocate(macs, curves, 0.99, ceiling=0.95)
    x, y = allocate.damage_curve([0.5, 0.9], [0.3, 0.2])
    assert list(y) == [0.0, 0.3, 0.3]  # made non-decreasing


def test_compare_counts_agreement_and_hand_size_fractions():
    rng = np.random.default_rng(1)
    lm = rng.uniform(50, 150, (3, 21, 3)).astype(np.float32)
    ref = E.Outputs(lm, np.array([0.9, 0.9, 0.1]), np.array([0.8, 0.2, 0.8]), lm)
    q = E.compare(ref, ref)
    assert q["mean_landmark_error"] == 0 and q["presence_agreement"] == 1 and q["handedness_agreement"] == 1
    assert q["crops_with_hand"] == 2
    moved = lm.copy()
    moved[..., 0] += 10
    cand = E.Outputs(moved, np.array([0.9, 0.2, 0.1]), np.array([0.2, 0.2, 0.8]), lm)
    q = E.compare(ref, cand, ["a: 1", "a: 2", "b: 3"], by_source=True)
    size = np.ptp(lm[:2, :, :2], axis=1).max(axis=1)
    assert q["mean_landmark_error"] == pytest.approx(float(np.mean(10 / size)), rel=1e-5)
    assert q["presence_agreement"] == pytest.approx(2 / 3)
    assert q["handedness_agreement"] == pytest.approx(1 / 2)  # over the two crops with a hand
    assert set(q["by_source"]) == {"a", "b"}


@pytest.mark.slow
def test_loss_is_zero_for_the_teacher_and_masks_stay_fixed(lite):
    from pysparse.prune import oneshot
    from pysparse.training import distill as D
    teacher = D.Teacher(lite)
    x = torch.from_numpy(A.to_input(np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), np.uint8)))
    t = teacher.tensors(x)
    assert len(D.feature_tensors(lite)) >= 5 and len(D.logit_tensors(lite)) == 2
    loss, parts = D.distill_loss(t, t, lite, 0.3, torch)
    assert loss.item() == pytest.approx(0, abs=1e-9)
    loss, parts = D.distill_loss(t, t, lite, 0.3, torch, logit_loss="bce")
    assert loss.item() == pytest.approx(0, abs=1e-6)
    # landmarks in units of the hand, weighted by presence: an image without a hand costs nothing
    lm_name, pres_name = lite.outputs[:2]
    no_hand = dict(t)
    no_hand[pres_name] = torch.tensor([[1.0], [0.0]])
    moved = dict(no_hand)
    moved[lm_name] = t[lm_name].clone()
    moved[lm_name][1] += 20
    assert D.distill_loss(no_hand, no_hand, lite, 0.3, torch, landmark_loss="hand")[0].item() == pytest.approx(0)
    assert D.distill_loss(moved, no_hand, lite, 0.3, torch, landmark_loss="hand")[1]["landmarks"] == 0
    moved[lm_name][0] += 20
    assert D.distill_loss(moved, no_hand, lite, 0.3, torch, landmark_loss="hand")[1]["landmarks"] > 0
    # a presence logit on the other side of 0 costs more than one further out on the same side
    n = D.logit_tensors(lite)[0]
    flipped, further = dict(t), dict(t)
    flipped[n], further[n] = -t[n], t[n] * 3
    assert (D.distill_loss(flipped, t, lite, 0.3, torch, logit_loss="bce")[1]["logits"]
            > D.distill_loss(further, t, lite, 0.3, torch, logit_loss="bce")[1]["logits"])
    student = GraphModule(oneshot(lite, 0.8)).train()
    pruned = {info.name: p for info, p in student.prunable_layers() if (p.detach() == 0).any()}
    zeros = {n: (p.detach() == 0).clone() for n, p in pruned.items()}
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    masks = D.FixedMasks(pruned, opt)
    loss, _ = D.distill_loss(student.values([x], wanted=set(t)), t, lite, 0.3, torch)
    assert loss.item() > 0
    loss.backward()
    opt.step()
    masks.remove()
    for n, p in pruned.items():
        assert torch.all(p.detach()[zeros[n]] == 0)
        assert not torch.all(p.detach()[~zeros[n]] == 0)


@pytest.mark.parametrize("block", [1, 4])
def test_masks_pruned_further_keep_the_old_zeros_and_mask_the_gradients(lite, block):
    """`prune_to` (gradual pruning from a less sparse model): each layer reaches its own
    sparsity, every zero stays zero, and the gradients follow the new masks."""
    from pysparse.prune import masks as M
    from pysparse.prune import oneshot
    from pysparse.prune.oneshot import select
    from pysparse.torch_module import GraphModule
    from pysparse.training import distill as D
    student = GraphModule(oneshot(lite, 0.5, block=block)).train()
    chosen = {name for name, why in select(lite).items() if why is None}
    layers = {info.name: p for info, p in student.prunable_layers() if info.name in chosen}
    opt = torch.optim.SGD(student.parameters(), lr=1e-2)
    masks = D.FixedMasks(layers, opt)
    before = {n: (p.detach() == 0).clone() for n, p in layers.items()}
    start = D.zero_share(layers, block)
    targets = {n: (0.7 if i % 2 else 0.85) for i, n in enumerate(layers)}
    masks.prune_to(targets, block)
    after = D.zero_share(layers, block)
    for n, p in layers.items():
        assert start[n] == pytest.approx(0.5, abs=0.02)
        assert after[n] == pytest.approx(targets[n], abs=0.02)
        assert torch.all(p.detach()[before[n]] == 0)
        assert M.units_all_or_nothing(masks.masks[n].numpy(), block)
    x = torch.from_numpy(A.to_input(np.full((1, 224, 224, 3), 128, np.uint8)))
    sum(y.abs().sum() for y in student(x)).backward()
    for n, p in layers.items():
        assert torch.all(p.grad[~masks.masks[n]] == 0) and p.grad.abs().sum() > 0
    masks.remove()


@pytest.mark.slow
def test_distill_smoke_and_evaluate_commands(tmp_path, capsys, lite):
    out = tmp_path / "smoke.spnn"
    small = "model_1/model/conv2d_1/*"  # a 1x1 layer the default rule leaves dense (few weights)
    assert main(["distill", "--smoke", "--model", "hand_landmark_lite", "--sparsity", "0.7", "--threads", "2",
                 "--cache", str(tmp_path / "cache"), "--include", small, "-o", str(out)]) == 0
    report = json.loads(out.with_suffix(".report.json").read_text())
    row = next(r for r in report["layers"] if r["name"].startswith(small[:-1]))
    assert row["status"] == "pruned" and row["sparsity"] == pytest.approx(0.7, abs=0.01), row
    assert report["validation"]["crops"] > 100 and set(report["validation"]["by_source"]) == {
        s.name for s in S.split(S.all_sources(), "validation")}
    assert report["sources"]["fingerpose"]["split"] == "train"
    assert out.with_suffix(".ckpt.pt").exists() and out.with_suffix(".log.jsonl").exists()
    # a sparser model from that one, pruned further while it trains
    further = tmp_path / "further.spnn"
    assert main(["distill", "--smoke", "--model", "hand_landmark_lite", "--sparsity", "0.85", "--threads", "2",
                 "--cache", str(tmp_path / "cache"), "--start-from", str(out), "-o", str(further)]) == 0
    report = json.loads(further.with_suffix(".report.json").read_text())
    assert report["start_from"] == str(out) and report["ramp_steps"] == 2
    pruned = [row for row in report["layers"] if row["status"] == "pruned"]
    assert pruned and all(row["sparsity"] == pytest.approx(0.85, abs=0.01) for row in pruned)
    # a run resumed from its checkpoint keeps where the model started, and lists both runs
    assert main(["distill", "--smoke", "--model", "hand_landmark_lite", "--sparsity", "0.85", "--threads", "2",
                 "--cache", str(tmp_path / "cache"), "--resume", "--lr", "1e-4", "--ema", "0.9",
                 "-o", str(further)]) == 0
    report = json.loads(further.with_suffix(".report.json").read_text())
    assert report["start_from"] == str(out) and [p["lr"] for p in report["phases"]] == [2e-4, 1e-4]
    assert [p["ema"] for p in report["phases"]] == [0.0, 0.9]
    assert "gradual pruning from smoke.spnn" in read_spnn(further.read_bytes()).metadata["pruning"]["method"]
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(["distill", "--smoke", "--model", "hand_landmark_lite", "--start-from", str(tmp_path / "none.spnn"),
              "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "x.spnn")])
    # a model on its own, as shipped (no checkpoint beside it): its weights and zeros are the start
    alone = tmp_path / "shipped" / "model.spnn"
    alone.parent.mkdir()
    shutil.copy(further, alone)
    again = tmp_path / "again.spnn"
    assert main(["distill", "--smoke", "--model", "hand_landmark_lite", "--sparsity", "0.85", "--threads", "2",
                 "--cache", str(tmp_path / "cache"), "--start-from", str(alone), "-o", str(again)]) == 0
    assert json.loads(again.with_suffix(".report.json").read_text())["start_from"] == str(alone)
    before, after = (GraphModule(read_spnn(f.read_bytes()).graph).state_dict() for f in (alone, again))
    assert all(torch.all(after[k][before[k] == 0] == 0) for k in before)
    assert any(not torch.equal(after[k], before[k]) for k in before)  # and it trained
    with pytest.raises(SystemExit, match="not a model of hand_landmark_full"):
        main(["distill", "--smoke", "--model", "hand_landmark_full", "--start-from", str(alone),
              "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "y.spnn")])
    capsys.readouterr()
    # evaluate: a folder of the user's images, a model against itself and the pruned one
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in S.FINGERPOSE_PHOTOS:
        Image.open(assets.photo_path(name)).save(folder / name)
    model = assets.model_path("hand_landmark_lite.tflite")
    assert main(["evaluate", str(model), str(model), str(out), "--images", str(folder), "--no-yardstick",
                 "--json", str(tmp_path / "q.json")]) == 0
    q = json.loads((tmp_path / "q.json").read_text())["results"]
    same = q[str(model)]
    assert same["mean_landmark_error"] == 0 and same["presence_agreement"] == 1
    assert q[str(out)]["crops"] == 3
    assert "mean landmark error" in capsys.readouterr().out


def test_calibration_uses_framed_hands_for_hand_landmark_models_only(lite, monkeypatch):
    """`prune --calibrate` without --images: hand crops of the training sources for a hand
    landmark model (made like the distillation pool), the photos for any other model."""
    from pathlib import Path

    from pysparse.commands.prune import hand_crops
    from pysparse.training import distill
    assert hand_crops(Path("palm_detection_full.tflite"), lite, 4) is None
    assert hand_crops(Path("my_classifier.onnx"), lite, 4) is None
    made = {}

    def pool(teacher, train, n, seed, progress=True):
        made.update(n=n, sources={s.split for s in train})
        return np.full((n, A.SIZE, A.SIZE, 3), 255, np.uint8), ["no hand"] * n
    monkeypatch.setattr(distill, "build_pool", pool)
    x = hand_crops(Path("models/hand_landmark_lite.tflite"), lite, 5)
    assert made == {"n": 5, "sources": {"train"}}
    assert x.shape == (5, 3, A.SIZE, A.SIZE) and x.dtype == np.float32 and float(x.max()) == 1.0


def test_pool_draws_each_source_as_often_as_the_others_of_its_kind(monkeypatch):
    """Many frames of one person do not outweigh a few photos of many people: the pool picks
    a source of the kind first, then one of its items."""
    from PIL import Image

    from pysparse.training import distill

    def source(name, kind, n):
        img = Image.new("RGB", (64, 64))
        return S.Source(name, "train", kind, "test", [S.Item(f"{name}#{i}", img, (32.0, 32.0, 64.0))
                                                     for i in range(n)])
    sources = [source("many-frames", "photo", 40), source("few-photos", "photo", 2),
               source("drawn", "drawing", 5), source("plain", "background", 1)]
    monkeypatch.setattr(distill, "prepare", lambda teacher, ss: [(s, it, it.box, None) for s in ss
                                                                  if s.kind != "background" for it in s.items])
    monkeypatch.setattr(A, "augment", lambda rng, img, roi, photos, lm: np.zeros((A.SIZE, A.SIZE, 3), np.uint8))
    _, names = distill.build_pool(None, sources, 2000, seed=0, progress=False)
    count = {k: sum(n.startswith(k + ":") for n in names) for k in ("many-frames", "few-photos", "drawn")}
    assert abs(count["many-frames"] - count["few-photos"]) < 0.15 * count["few-photos"], count
    assert names.count("no hand") > 0.08 * len(names)


def test_weight_average_follows_the_weights_and_swaps_back():
    """`--ema`: the average moves towards each step's weights by 1 - decay (a smaller step for
    the first updates), evaluation can borrow it, and a checkpoint carries it."""
    from pysparse.training import distill as D
    module = torch.nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.zero_()
    avg = D.WeightAverage(module, 0.5)
    with torch.no_grad():
        module.weight.fill_(1.0)
    avg.update()  # decay min(0.5, 2/11): the first updates follow the weights closely
    assert torch.allclose(avg.shadow["weight"], torch.full((2, 3), 9 / 11))
    avg.update()  # decay 0.25
    assert torch.allclose(avg.shadow["weight"], torch.full((2, 3), 0.25 * 9 / 11 + 0.75))
    expected = avg.shadow["weight"].clone()
    with avg.swapped():
        assert torch.equal(module.weight.detach(), expected)
    assert torch.equal(module.weight.detach(), torch.ones(2, 3))
    again = D.WeightAverage(torch.nn.Linear(3, 2), 0.5)
    again.load_state_dict(avg.state_dict())
    assert again.updates == 2 and torch.equal(again.shadow["weight"], expected)
    avg.copy_to_model()
    assert torch.equal(module.weight.detach(), expected)
    # a later run started from this one begins from the averaged weights, with the zeros kept
    with torch.no_grad():
        module.weight[0, 0] = 0.0
    start = D.shipped_weights({"student": module.state_dict(), "ema": avg.state_dict()})
    assert start["weight"][0, 0] == 0 and start["weight"][1, 1] == expected[1, 1]
