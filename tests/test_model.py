"""The EfficientNet-Lite backbone and IQSNet heads (training/model.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iqs_cli.card import InputSpec, image_to_tensor  # noqa: E402
from iqs_cli.decode import load_rgb  # noqa: E402
from iqs_training import model as M  # noqa: E402

LADYBUG, DAISY = 301, 985  # ImageNet class indices


@pytest.fixture(scope="module")
def imagenet():
    return M.imagenet_model("lite0")


def imagenet_top5(net, path) -> list[int]:
    spec = InputSpec(size=224, resize="squash")  # RGB [0, 1], then (x - 0.5) / 0.5
    x = torch.from_numpy(image_to_tensor(load_rgb(path, 224), spec))[None]
    with torch.no_grad():
        return net(x).topk(5).indices[0].tolist()


def test_imagenet_weights_load_strictly_with_our_key_names(imagenet):
    state = M.load_imagenet_state("lite0")
    assert set(state) == set(imagenet.state_dict())
    for key, value in state.items():
        assert imagenet.state_dict()[key].shape == value.shape, key
    # The head conv and classifier of Lite keep their sizes (no width scaling of stem / head).
    assert state["_conv_stem.weight"].shape[0] == 32 and state["_fc.weight"].shape == (1000, 1280)


@pytest.mark.parametrize("name,expected", [("mate-LadyBird.jpg", LADYBUG), ("mate-YellowFlower.jpg", DAISY)])
def test_imagenet_top5_on_real_photos(imagenet, shared_data, name, expected):
    assert expected in imagenet_top5(imagenet, shared_data / "pristine" / name)


# TensorFlow's SAME padding, total = max((ceil(n/s) - 1) * s + k - n, 0) with the larger half at
# the end: for stride 2 on an even size the start gets no padding (PyTorch's symmetric padding
# would give 14 top left for the 4x4 case). Input 1..h*w row by row, all-ones 1x1-channel kernel:
# each output is the sum of its (padded) window. Worked by hand for the 4x4 case.
SAME_GOLDEN = [
    ((3, 2, 4, 4), [[54, 45], [72, 54]]),
    ((3, 2, 5, 6), [[30, 42, 34], [126, 144, 105], [138, 150, 106]]),
    ((5, 2, 5, 5), [[63, 120, 81], [180, 325, 210], [153, 270, 171]]),
    ((3, 1, 3, 4), [[14, 24, 30, 22], [33, 54, 63, 45], [30, 48, 54, 38]]),
]


@pytest.mark.parametrize("shape,expected", SAME_GOLDEN, ids=[str(s) for s, _ in SAME_GOLDEN])
def test_conv2d_same_matches_tensorflow_padding(shape, expected):
    kernel, stride, h, w = shape
    conv = M.Conv2dSame(1, 1, kernel, stride)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(1.0, h * w + 1).reshape(1, 1, h, w)
    with torch.no_grad():
        assert conv(x)[0, 0].tolist() == expected


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (3, 1), (5, 1)])
def test_conv2d_same_output_is_ceil_of_size_over_stride(kernel, stride):
    conv = M.Conv2dSame(4, 4, kernel, stride, groups=4)
    for h, w in [(8, 8), (9, 9), (8, 11), (13, 10), (7, 7)]:
        out = conv(torch.zeros(1, 4, h, w))
        assert out.shape == (1, 4, math.ceil(h / stride), math.ceil(w / stride))


def test_lite_variants_scale_blocks_but_not_stem_and_head():
    counts = {}
    for name in M.LITE_CONFIGS:
        specs = M._block_specs(M.LITE_CONFIGS[name])
        counts[name] = len(specs)
        assert specs[0][1] == M.STEM_CHANNELS  # first block reads the fixed 32-channel stem
        first_stage = [s for s in specs if s[0] == 0]
        last_stage = [s for s in specs if s[0] == 6]
        assert len(first_stage) == 1 and len(last_stage) == 1  # never depth-scaled in Lite
    assert counts["lite0"] == 16
    assert counts["lite0"] <= counts["lite1"] <= counts["lite2"] <= counts["lite3"] <= counts["lite4"]
    lite4 = M.EfficientNetLite("lite4")
    assert lite4._conv_stem.out_channels == 32 and lite4._conv_head.out_channels == 1280
    assert lite4._blocks[-1].out_channels == M.round_filters(320, 1.4)
    with pytest.raises(M.ModelError, match="unknown backbone"):
        M.EfficientNetLite("b0")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return M.IQSNet("lite0", num_attributes=4, pretrained=True, multiscale=True).eval()


def test_outputs_have_the_contract_shapes_and_ranges(net):
    x = torch.randn(3, 3, 48, 56)
    with torch.no_grad():
        out = net(x)
    assert out["class_logits"].shape == (3, 3)
    assert out["mos"].shape == (3,) and bool(((out["mos"] > 0) & (out["mos"] < 100)).all())
    assert out["attributes"].shape == (3, 4)
    assert bool(((out["attributes"] >= 0) & (out["attributes"] <= 1)).all())
    # `features` are what the linear heads read: a personal head (iqs learn) stands in for them.
    assert out["features"].shape == (3, net.feature_dim)
    torch.testing.assert_close(net.class_head(out["features"]), out["class_logits"])
    wrapper = M.ExportWrapper(net)
    assert wrapper.output_names == ("class_logits", "mos", "attributes", "features")
    no_attributes = M.IQSNet("lite0", num_attributes=0, pretrained=False).eval()
    assert M.ExportWrapper(no_attributes).output_names == ("class_logits", "mos", "features")


@pytest.mark.parametrize("trainable_blocks,train_conv_head,multiscale", [
    (None, True, False), (3, True, True), (0, True, False), (0, False, True), (16, True, True),
])
def test_prefix_then_suffix_is_the_forward_pass(trainable_blocks, train_conv_head, multiscale):
    torch.manual_seed(1)
    net = M.IQSNet("lite0", num_attributes=2, pretrained=False, multiscale=multiscale,
                   trainable_blocks=trainable_blocks, train_conv_head=train_conv_head).eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        whole = net(x)
        fmap, pooled = net.encode_prefix(x)
        split = net.forward_suffix(fmap, pooled)
    if not train_conv_head:
        assert fmap is None and pooled.shape == (2, net.feature_dim)
    for key in ("class_logits", "mos", "attributes"):
        torch.testing.assert_close(whole[key], split[key])


def test_frozen_prefix_does_not_change_while_training():
    torch.manual_seed(2)
    net = M.IQSNet("lite0", num_attributes=1, pretrained=False, trainable_blocks=2)
    frozen = net.frozen_modules()
    assert net.backbone._blocks[13] in frozen and net.backbone._blocks[14] not in frozen
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert all(n.startswith(("backbone._blocks.14.", "backbone._blocks.15.", "backbone._conv_head",
                             "backbone._bn1.", "feature_norm", "class_head", "mos_head",
                             "attribute_head")) for n in trainable)
    assert "backbone._blocks.15._project_conv.weight" in trainable
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    assert not net.backbone._bn0.training and net.backbone._blocks[15]._bn1.training
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    out = net(torch.randn(2, 3, 32, 32))
    (out["mos"].mean() + out["class_logits"].sum()).backward()
    optimizer.step()
    after = net.state_dict()
    for key, value in before.items():
        moved = not torch.equal(value, after[key])
        if key.startswith(("backbone._conv_stem", "backbone._bn0", "backbone._blocks.0.",
                           "backbone._blocks.13.")):
            assert not moved, f"frozen {key} changed"
    assert not torch.equal(before["mos_head.weight"], after["mos_head.weight"])
    assert not torch.equal(before["backbone._blocks.15._bn1.running_mean"],
                           after["backbone._blocks.15._bn1.running_mean"])


def test_bad_freeze_options_are_refused():
    with pytest.raises(M.ModelError, match="trainable_blocks must be between"):
        M.IQSNet(pretrained=False, trainable_blocks=17)
    with pytest.raises(M.ModelError, match="train_conv_head=False"):
        M.IQSNet(pretrained=False, trainable_blocks=2, train_conv_head=False)


def test_build_model_round_trips_hparams(net):
    rebuilt = M.build_model(net.hparams())
    assert rebuilt.hparams() == net.hparams()
    rebuilt.load_state_dict(net.state_dict())
    with pytest.raises(M.ModelError, match="unknown model options"):
        M.build_model({**net.hparams(), "width": 2})
    assert np.isclose(net.feature_dim, 1280 + 2 * (24 + 40 + 80 + 112 + 192))


def test_mos_span_maps_the_logit_linearly_wider_and_clips_to_the_scale():
    wide = M.IQSNet("lite0", pretrained=False, mos_span=(-50, 150)).eval()
    assert wide.hparams()["mos_span"] == [-50.0, 150.0]
    assert M.build_model(wide.hparams()).mos_span == (-50.0, 150.0)
    features = torch.zeros(4, wide.feature_dim)
    with torch.no_grad():
        wide.mos_head.weight.zero_()
        wide.mos_head.bias.copy_(torch.tensor([0.0]))
        assert float(wide.heads(features)["mos"][0]) == pytest.approx(50.0)
        wide.mos_head.bias.copy_(torch.tensor([math.log(0.4 / 0.6)]))  # sigmoid = 0.4 -> 30
        assert float(wide.heads(features)["mos"][0]) == pytest.approx(30.0, abs=1e-4)
        wide.mos_head.bias.copy_(torch.tensor([5.0]))  # 148.7 on the span, clipped
        assert float(wide.heads(features)["mos"][0]) == 100.0
        wide.mos_head.bias.copy_(torch.tensor([-5.0]))
        assert float(wide.heads(features)["mos"][0]) == 0.0
    with pytest.raises(M.ModelError, match="mos_span"):
        M.IQSNet("lite0", pretrained=False, mos_span=(10, 100))


def test_multiscale_blocks_taps_every_block():
    from iqs_training.model import IQSNet, ModelError

    net = IQSNet("lite0", num_attributes=2, pretrained=False, multiscale="blocks", trainable_blocks=0,
                 train_conv_head=False)
    channels = sum(block.out_channels for block in net.backbone._blocks)
    assert net.tap_blocks == list(range(16)) and net.feature_dim == 1280 + 2 * channels
    out = net.eval()(torch.zeros(1, 3, 64, 64))
    assert out["class_logits"].shape == (1, 3) and out["attributes"].shape == (1, 2)
    with pytest.raises(ModelError):
        IQSNet("lite0", pretrained=False, multiscale="everything")


def test_synthetic_use_mos_false_masks_only_the_mos_target(shared_data):
    from iqs_training.data import SYNTHETIC_DATASET, SyntheticDataset
    from iqs_training.datasets.synthetic import ATTRIBUTES, SyntheticDistortions

    refs = sorted((shared_data / "pristine").glob("mate-*.jpg"))[:2]
    distortions = SyntheticDistortions(refs, crop_size=64, samples_per_epoch=2, seed=0,
                                       reference_short_side=96)
    spec = InputSpec(size=64)
    for use_mos in (True, False):
        ds = SyntheticDataset(distortions, spec, ATTRIBUTES, [SYNTHETIC_DATASET], ladder_levels=2,
                              use_mos=use_mos)
        group = ds[0]
        assert torch.isnan(group["mos"]).all() == (not use_mos)
        assert (group["label"] >= 0).all() and group["level"].tolist()[0] == 0


def test_synthetic_items_name_their_reference_photo(shared_data):
    from iqs_training.data import SYNTHETIC_DATASET, SyntheticDataset
    from iqs_training.datasets.synthetic import ATTRIBUTES, SyntheticDistortions

    refs = sorted((shared_data / "pristine").glob("mate-*.jpg"))[:3]
    distortions = SyntheticDistortions(refs, crop_size=64, samples_per_epoch=6, seed=0,
                                       reference_short_side=96)
    spec = InputSpec(size=64)
    for ladder_levels in (0, 2):
        ds = SyntheticDataset(distortions, spec, ATTRIBUTES, [SYNTHETIC_DATASET],
                              ladder_levels=ladder_levels)
        sources = [set(ds[i]["source"].tolist()) for i in range(len(ds))]
        assert all(len(s) == 1 for s in sources)  # a ladder is one photo
        assert set().union(*sources) <= {0, 1, 2} and len(set().union(*sources)) > 1
    single = distortions[1]
    ds = SyntheticDataset(distortions, spec, ATTRIBUTES, [SYNTHETIC_DATASET], ladder_levels=0)
    assert int(ds[1]["source"][0]) == refs.index(single.reference_path)
