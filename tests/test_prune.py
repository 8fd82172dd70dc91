"""pysparse.prune: schedule, masks, blocks, exclusion rules, finalize, one-shot on the IR."""
import numpy as np
import pytest
import torch
from torch import nn

from pysparse import reference
from pysparse.ir import Graph
from pysparse.prune import GradualPruner, LayerInfo, PolynomialSchedule, exclusion, ir_report, oneshot
from pysparse.prune import masks as M


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),          # stem: dense
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),       # depthwise: dense
        nn.Conv2d(16, 64, 1), nn.ReLU(),                             # 1x1, 1024 weights: tiny
        nn.Conv2d(64, 66, 1), nn.ReLU(),                             # 1x1, 4224 weights, 66 = 16*4 + 2 rows
        nn.Conv2d(66, 64, 1), nn.ReLU(),                             # 1x1, 4224 weights
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 40),                                           # 2560 weights
        nn.ReLU(), nn.Linear(40, 2))                                 # head: tiny


def train(model, pruner, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 12, 12, generator=g)
        opt.zero_grad()
        loss = (model(x) - 1.0).pow(2).mean()
        loss.backward()
        opt.step()
        pruner.step()


# -- schedule ---------------------------------------------------------------------------------

def test_schedule_values():
    s = PolynomialSchedule(final=0.8, initial=0.0, begin_step=100, end_step=1100, frequency=100)
    assert s.sparsity(0) == 0.0 and s.sparsity(100) == 0.0
    assert s.sparsity(600) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)  # 0.7
    assert s.sparsity(350) == pytest.approx(0.8 - 0.8 * 0.75 ** 3)
    assert s.sparsity(1100) == pytest.approx(0.8) and s.sparsity(5000) == pytest.approx(0.8)
    s2 = PolynomialSchedule(final=0.9, initial=0.5, begin_step=0, end_step=10, frequency=3, power=1)
    assert s2.sparsity(5) == pytest.approx(0.7)
    assert [t for t in range(15) if s2.updates_at(t)] == [0, 3, 6, 9, 10]
    assert [t for t in range(1300) if s.updates_at(t)] == list(range(100, 1101, 100))
    values = [s.sparsity(t) for t in range(0, 1200, 10)]
    assert values == sorted(values)  # never decreases


@pytest.mark.parametrize("bad", [dict(final=1.0), dict(initial=-0.1), dict(begin_step=5, end_step=4),
                                 dict(frequency=0), dict(power=0)])
def test_schedule_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        PolynomialSchedule(**bad)


# -- masks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("shape", [(66, 64, 1, 1), (7, 30), (3, 5, 1, 1)])
def test_layer_mask_sparsity_and_blocks(block, shape):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    keep = M.layer_mask(w, 0.75, block)
    assert keep.shape == w.shape
    assert abs((1 - keep.mean()) - 0.75) <= (block / w.size) + 1e-9
    assert M.units_all_or_nothing(keep, block)


def test_layer_mask_drops_the_smallest_blocks():
    w = np.ones((8, 4), np.float32)
    w[0:4, 1] = 0.01   # first block of 4 rows, column 1: smallest block
    w[4:8, 3] = 0.02   # second block, column 3
    w[2, 2] = 0.0      # a single tiny weight does not make its block small
    keep = M.layer_mask(w, 0.25, block=4)
    assert not keep[0:4, 1].any() and not keep[4:8, 3].any()
    assert keep.sum() == 24
    keep1 = M.layer_mask(w, 1 / 32, block=1)
    assert not keep1[2, 2] and keep1.sum() == 31


def test_global_mask_ranks_layers_together():
    small = np.full((16, 16), 0.1, np.float32)
    big = np.full((16, 16), 1.0, np.float32)
    keep = M.global_masks({"small": small, "big": big}, 0.5)
    assert not keep["small"].any() and keep["big"].all()


def test_bad_block_and_norm_rejected():
    with pytest.raises(ValueError):
        M.layer_mask(np.ones((4, 4)), 0.5, block=3)
    with pytest.raises(ValueError):
        M.layer_mask(np.ones((4, 4)), 0.5, norm="linf")


# -- exclusion rules ----------------------------------------------------------------------------

def test_default_exclusions():
    pruner = GradualPruner(small_net(), target=0.5)
    assert sorted(pruner.layers) == ["12", "6", "8"]
    why = {name: reason for name, (_, _, reason) in pruner.skipped.items()}
    assert why == {"0": "first conv", "2": "depthwise", "4": "tiny (1024 weights)", "14": "tiny (80 weights)"}


def test_exclusion_overrides():
    net = small_net()
    pruner = GradualPruner(net, target=0.5, exclude=["8"], include=["2", "4", "8"])
    assert sorted(pruner.layers) == ["12", "2", "4", "6"]
    assert exclusion(LayerInfo("head/fc", "fc", (2, 40)), include=["head/*"]) is None
    assert exclusion(LayerInfo("x", "conv", (64, 64, 3, 3))) == "3x3 conv"
    with pytest.raises(ValueError, match="no layer to prune"):
        GradualPruner(net, exclude=["*"])


# -- gradual pruning in training ---------------------------------------------------------------

@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("block", [1, 4])
def test_zeros_stay_zero_through_optimizer_steps(opt_name, block):
    net = small_net()
    if opt_name == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    pruner = GradualPruner(net, target=0.8, block=block, begin_step=0, end_step=6, frequency=2)
    before = {name: p.detach().clone() for name, (_, p, _) in pruner.skipped.items()}
    train(net, pruner, opt, 7)  # steps 0..6: the last mask update is at end_step 6
    zeros_at_end = {name: (p == 0).clone() for name, (_, p) in pruner.layers.items()}
    for name, (_, p) in pruner.layers.items():
        assert abs(M.sparsity(p.detach().numpy()) - 0.8) < 0.02, name
        assert M.units_all_or_nothing(p.detach().numpy() != 0, block)
    train(net, pruner, opt, 5, seed=2)  # past end_step: masks fixed, the weights still train
    for name, (_, p) in pruner.layers.items():
        assert torch.equal(p == 0, zeros_at_end[name]), name
    for name, (_, p, _) in pruner.skipped.items():
        assert M.sparsity(p.detach().numpy()) == 0.0 and not torch.equal(p, before[name])


def test_masks_grow_monotonically_and_follow_the_schedule():
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    pruner = GradualPruner(net, target=0.9, begin_step=2, end_step=12, frequency=5)
    prev = None
    seen = []
    for step in range(14):
        train(net, pruner, opt, 1, seed=step)
        zeros = {n: (p == 0).clone() for n, (_, p) in pruner.layers.items()}
        if prev is not None:
            for n in zeros:
                assert bool((zeros[n] | ~prev[n]).all()), "a pruned weight came back"
        prev = zeros
        seen.append(round(pruner.current_sparsity, 4))
    sched = pruner.schedule
    assert seen[1] == 0.0 and seen[2] == 0.0  # begin at step 2 with initial sparsity 0
    assert seen[7] == round(sched.sparsity(7), 4) and seen[12] == 0.9 and seen[13] == 0.9


def test_global_scope_reaches_the_overall_target():
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    pruner = GradualPruner(net, target=0.7, block=2, end_step=2, frequency=1, scope="global")
    train(net, pruner, opt, 3)
    t = pruner.totals()
    assert abs(t["sparsity_pruned"] - 0.7) < 0.01
    per_layer = [r.sparsity for r in pruner.report() if r.status == "pruned"]
    assert max(per_layer) - min(per_layer) > 0.01  # layers differ under one threshold


def test_optimizer_hook_reapplies_masks():
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    pruner = GradualPruner(net, target=0.5, end_step=0, optimizer=opt)
    pruner.step()  # step 0: prunes to 50%
    masks = {n: m.clone() for n, m in pruner.masks.items()}
    for _ in range(3):  # no pruner.step(): the post-step hook alone keeps the zeros
        opt.zero_grad()
        net(torch.randn(2, 3, 8, 8)).sum().backward()
        opt.step()
    for n, (_, p) in pruner.layers.items():
        assert torch.equal(p != 0, masks[n])


def test_finalize_removes_hooks_and_keeps_zeros():
    net = small_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    pruner = GradualPruner(net, target=0.6, block=4, end_step=2, frequency=1, optimizer=opt)
    train(net, pruner, opt, 3)
    rows = pruner.finalize()
    assert {r.name for r in rows} == set(pruner.layers) | set(pruner.skipped)
    pruned = [r for r in rows if r.status == "pruned"]
    assert len(pruned) == 3 and all(abs(r.sparsity - 0.6) < 0.02 for r in pruned)
    assert "layers pruned" in pruner.text_report()
    zeros = {n: (p == 0).clone() for n, (_, p) in pruner.layers.items()}
    # Without hooks, training moves the pruned weights again (it is now an ordinary model)
    opt.zero_grad()
    net(torch.randn(2, 3, 8, 8)).pow(2).sum().backward()
    some = next(iter(pruner.layers.values()))[1]
    assert bool((some.grad[zeros[next(iter(pruner.layers))]] != 0).any())
    with pytest.raises(RuntimeError):
        pruner.step()


def test_state_dict_resumes():
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    pruner = GradualPruner(net, target=0.8, end_step=4, frequency=2)
    train(net, pruner, opt, 3)
    state = pruner.state_dict()
    again = GradualPruner(net, target=0.8, end_step=4, frequency=2)
    again.load_state_dict(state)
    assert again.step_count == 3 and all(torch.equal(again.masks[n], pruner.masks[n]) for n in pruner.masks)


# -- one-shot on the IR --------------------------------------------------------------------------

def ir_net():
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_tensor("x", (1, 3, 8, 8))
    g.inputs = ["x"]
    shapes = {"stem": (16, 3, 3, 3), "dw": (16, 1, 3, 3), "pw1": (64, 16, 1, 1), "pw2": (66, 64, 1, 1),
              "fc": (10, 66), "head": (1, 10)}
    for n, s in shapes.items():
        g.add_constant(n + "/w", rng.standard_normal(s).astype(np.float32))
    pads = dict(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    g.add_tensor("a", (1, 16, 8, 8)); g.add_op("CONV2D", ["x", "stem/w"], ["a"], "stem", act=1, **pads)
    g.add_tensor("b", (1, 16, 8, 8)); g.add_op("CONV2D", ["a", "dw/w"], ["b"], "dw", groups=16, **pads)
    g.add_tensor("c", (1, 64, 8, 8)); g.add_op("CONV2D", ["b", "pw1/w"], ["c"], "pw1", act=1)
    g.add_tensor("d", (1, 66, 8, 8)); g.add_op("CONV2D", ["c", "pw2/w"], ["d"], "pw2")
    g.add_tensor("e", (1, 66)); g.add_op("MEAN", ["d"], ["e"], "gap", axes_mask=12, keepdims=0)
    g.add_tensor("f", (1, 10)); g.add_op("FULLY_CONNECTED", ["e", "fc/w"], ["f"], "fc")
    g.add_tensor("y", (1, 1)); g.add_op("FULLY_CONNECTED", ["f", "head/w"], ["y"], "head")
    g.outputs = ["y"]
    return g


@pytest.mark.parametrize("block", [1, 2, 4])
def test_oneshot_on_ir(block):
    g = ir_net()
    p = oneshot(g, 0.8, block=block, include=["fc/*"])
    rows = {r.name: r for r in ir_report(p, block=block, include=["fc/*"])}
    assert {n for n, r in rows.items() if r.status == "pruned"} == {"pw2/w", "fc/w"}
    assert rows["pw1/w"].status == "tiny (1024 weights)" and rows["stem/w"].status == "first conv"
    assert rows["dw/w"].status == "depthwise"
    for n in ("pw2/w", "fc/w"):
        assert abs(rows[n].sparsity - 0.8) <= block * 1.0 / rows[n].weights + 1e-9
        assert M.units_all_or_nothing(p.tensors[n].data != 0, block)
        kept = p.tensors[n].data != 0
        np.testing.assert_array_equal(p.tensors[n].data[kept], g.tensors[n].data[kept])
    for n in ("stem/w", "dw/w", "pw1/w", "head/w"):
        np.testing.assert_array_equal(p.tensors[n].data, g.tensors[n].data)
    assert M.sparsity(g.tensors["pw2/w"].data) == 0.0  # the input graph is not modified
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert reference.run(p, {"x": x})["y"].shape == (1, 1)


def test_oneshot_only_and_errors():
    g = ir_net()
    p = oneshot(g, 0.5, only=["pw1/w"])
    assert M.sparsity(p.tensors["pw1/w"].data) == 0.5 and M.sparsity(p.tensors["pw2/w"].data) == 0.0
    with pytest.raises(ValueError, match="no conv/FC weight"):
        oneshot(g, 0.5, only=["nope"])
    with pytest.raises(ValueError):
        oneshot(g, 1.0)


# -- export: trained zeros survive packing ----------------------------------------------------

@pytest.mark.parametrize("block,weights,sparse", [(1, "fp32", None), (4, "fp16", True), (2, "fp32", True)])
def test_pruned_training_packs_with_exactly_its_zeros(block, weights, sparse):
    from pysparse.format.reader import read_spnn
    from pysparse.pack import pack
    from pysparse.torch_module import GraphModule
    g = ir_net()
    module = GraphModule(g)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    pruner = GradualPruner(module, target=0.8, block=block, end_step=4, frequency=2, include=["fc/*"])
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        x = torch.rand(3, 3, 8, 8, generator=gen)
        opt.zero_grad()
        module(x).pow(2).mean().backward()
        opt.step()
        pruner.step()
    pruner.finalize()
    trained = module.to_graph()
    f = read_spnn(pack(trained, weights=weights, sparse=sparse))
    assert set(pruner.layers) == {"pw2/w", "fc/w"}
    for name in pruner.layers:
        want = trained.tensors[name].data
        got = f.graph.tensors[name].data
        assert got.shape == want.shape
        np.testing.assert_array_equal(got == 0, want == 0)  # same positions, same count
        assert abs(M.sparsity(got) - 0.8) < 0.02 and M.units_all_or_nothing(got != 0, block)
        tol = 0 if weights == "fp32" else 1e-3
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    enc = {layer["name"]: layer for layer in f.metadata["layers"]}
    if sparse:
        assert enc["pw2"]["encoding"] == "sparse" and f.weights["pw2/w"].block in (1, block)
    assert enc["pw2"]["sparsity"] == pytest.approx(M.sparsity(trained.tensors["pw2/w"].data), abs=1e-6)


# -- command line ------------------------------------------------------------------------------

def test_prune_command_on_a_real_model(tmp_path, capsys):
    from pysparse import assets
    from pysparse.cli import main
    from pysparse.format.reader import read_spnn_file
    src = assets.model_path("hand_landmark_lite.tflite")
    out = tmp_path / "lite80.spnn"
    assert main(["prune", str(src), "--sparsity", "0.8", "--block", "4", "--weights", "fp16", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "conv2d_24/Conv2D" in printed and "pruned, block 4" in printed and "first conv" in printed
    f = read_spnn_file(out)
    assert f.metadata["pruning"] == {"method": "one-shot magnitude", "sparsity": 0.8, "block": 4, "scope": "layer"}
    rows = {r.name: r for r in ir_report(f.graph, block=4)}
    pruned = [r for r in rows.values() if r.status == "pruned"]
    assert len(pruned) >= 20 and all(r.sparsity >= 0.79 for r in pruned)
    for r in pruned:  # the zeros come in whole block columns (kept ones may hold the model's own zeros)
        w = M.matrix_view(f.graph.tensors[r.name].data)
        ids = M.block_rows(w.shape[0], 4)
        dropped = sum(int((w[ids == b] == 0).all(axis=0).sum()) * int((ids == b).sum()) for b in range(ids.max() + 1))
        assert dropped / w.size > 0.8 - 4 / w.size, r.name
    # a .spnn input works too, and the source is never overwritten
    again = tmp_path / "lite90.spnn"
    assert main(["prune", str(out), "--sparsity", "0.9", "-o", str(again)]) == 0
    assert main(["prune", str(out), "--sparsity", "0.9", "-o", str(out)]) == 2
    assert read_spnn_file(out).metadata["pruning"]["sparsity"] == 0.8


@pytest.mark.slow
def test_sensitivity_command(tmp_path, capsys):
    import json

    from pysparse import assets
    from pysparse.cli import main
    src = assets.model_path("hand_landmark_lite.tflite")
    png = tmp_path / "sens.png"
    assert main(["sensitivity", str(src), "-o", str(png), "--levels", "0.5,0.9", "--noise", "1",
                 "--images", str(assets.photo_path("hand_nocurl.jpg"))]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(png.with_suffix(".json").read_text())
    assert report["inputs"] == ["nocurl.jpg", "noise seed 0"] and report["levels"] == [0.5, 0.9]
    assert len(report["layers"]) >= 20
    for layer in report["layers"]:
        e50, e90 = layer["mean_error"]["0.5"], layer["mean_error"]["0.9"]
        assert 0 <= e50 and 0 < e90 and np.isfinite(e90)
    # more pruning hurts more, on the whole
    assert np.mean([l["mean_error"]["0.9"] for l in report["layers"]]) > np.mean(
        [l["mean_error"]["0.5"] for l in report["layers"]])
    assert "conv_landmarks/MatMul" in capsys.readouterr().out
