"""The seed's losses against hand computations and properties, and the pretrained-weights loaders."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anytalk_training import losses as L
from anytalk_training.pretrained import (
    EmoNet,
    Hopenet,
    Vgg19Features,
    WeightsError,
    load_hopenet,
    load_vgg19,
)


# ------------------------------------------------------------------------------------------------ GAN

def _maps(pred: float, feats: list[float], b: int = 2) -> dict:
    return {"1": ([torch.full((b, 2, 3, 3), f) for f in feats], torch.full((b, 1, 4, 4), pred))}


def test_hinge_discriminator_signs_and_margin():
    # confident and right: no loss; undecided (0): 1 + 1 per scale; wrong: 1 + 3 + 1 + 3
    assert L.discriminator_hinge_loss(_maps(2.0, []), _maps(-2.0, []), 1.0).item() == 0.0
    assert L.discriminator_hinge_loss(_maps(0.0, []), _maps(0.0, []), 1.0).item() == pytest.approx(2.0)
    assert L.discriminator_hinge_loss(_maps(-3.0, []), _maps(3.0, []), 0.5).item() == pytest.approx(0.5 * (4 + 4))
    # inside the margin only the violated side counts
    assert L.discriminator_hinge_loss(_maps(0.5, []), _maps(-1.5, []), 1.0).item() == pytest.approx(0.5)


def test_hinge_generator_loss_is_minus_mean_fake_score():
    fake = _maps(0.75, [])
    fake["1"] = (fake["1"][0], torch.tensor([[[[1.0, 2.0], [3.0, -2.0]]]]))
    assert L.generator_gan_loss(fake, 2.0).item() == pytest.approx(-2.0 * 1.0)
    two_scales = {"1": ([], torch.ones(1, 1, 2, 2)), "0-5": ([], -torch.ones(1, 1, 1, 1) * 3)}
    assert L.generator_gan_loss(two_scales, 1.0).item() == pytest.approx(-1 + 3)


def test_feature_matching_by_hand():
    real, fake = _maps(0.0, [1.0, 2.0, 0.0]), _maps(0.0, [0.5, 2.5, 10.0])
    # 10 * 0.5 + 10 * 0.5 + 0 * 10 (a zero weight skips its block)
    assert L.feature_matching_loss(real, fake, [10.0, 10.0, 0.0]).item() == pytest.approx(10.0)
    fake_leaf = fake["1"][0][0].clone().requires_grad_(True)
    fake["1"][0][0] = fake_leaf
    real_leaf = real["1"][0][0].clone().requires_grad_(True)
    real["1"][0][0] = real_leaf
    L.feature_matching_loss(real, fake, [1.0, 1.0, 1.0]).backward()
    assert fake_leaf.grad is not None and real_leaf.grad is None  # real features are targets


# ------------------------------------------------------------------------------------------------ equivariance

def test_identity_transform_returns_the_frame_and_zero_equivariance(tiny_model):
    torch.manual_seed(0)
    frame = torch.rand(2, 3, 64, 64)
    t = L.EquivarianceTransform.identity(2)
    # the sampling grid is the keypoints' 2j/(n-1)-1 grid with align_corners=True: the frame comes back
    # (up to the float rounding of the grid coordinates)
    assert torch.allclose(t.transform_frame(frame), frame, atol=1e-5, rtol=0)
    pts = torch.rand(2, 15, 2) * 2 - 1
    assert torch.equal(t.warp_coordinates(pts), pts)
    model = tiny_model.eval()  # (train-mode BatchNorm on an untrained net amplifies 1e-7 rounding)
    with torch.no_grad():
        canonical = model.canonical_keypoints(frame)
        kp_d = model.motion_keypoints(canonical, model.estimate_motion(frame))
        kp_t = model.motion_keypoints(canonical, model.estimate_motion(t.transform_frame(frame)))
    assert L.equivariance_loss(kp_d, kp_t, t, 10.0).item() < 1e-4
    other = L.EquivarianceTransform.random(2, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kp_o = model.motion_keypoints(canonical, model.estimate_motion(other.transform_frame(frame)))
    assert L.equivariance_loss(kp_d, kp_o, other, 10.0).item() > 100 * L.equivariance_loss(kp_d, kp_t, t, 10.0).item()
    assert L.equivariance_loss(kp_d, kp_d, t, 10.0).item() == 0.0  # exactly zero for the same keypoints


def test_transform_moves_content_the_way_warp_coordinates_maps_back():
    """A blob at p in the transformed frame sits at warp(p) in the original frame."""
    g = torch.Generator().manual_seed(3)
    t = L.EquivarianceTransform.random(1, 0.05, 0.005, 5, generator=g)
    h = 97
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, h), indexing="ij")
    centre = torch.tensor([0.2, -0.1])
    blob = torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 0.05 ** 2)).expand(1, 3, h, h)
    out = t.transform_frame(blob)[0, 0]
    w = out / out.sum()
    p = torch.stack([(w * xs).sum(), (w * ys).sum()])  # blob centre in the transformed frame
    back = t.warp_coordinates(p.view(1, 1, 2))[0, 0]
    assert torch.allclose(back, centre, atol=0.01), (back, centre)


def test_random_transform_is_seeded_and_has_the_configured_spread():
    a = L.EquivarianceTransform.random(4096, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(1))
    b = L.EquivarianceTransform.random(4096, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.theta, b.theta) and torch.equal(a.control_params, b.control_params)
    assert (a.theta - torch.eye(2, 3)).std().item() == pytest.approx(0.05, rel=0.05)
    assert a.control_params.std().item() == pytest.approx(0.005, rel=0.05)
    assert a.control_params.shape == (4096, 1, 25)


# ------------------------------------------------------------------------------------------------ priors

def test_keypoint_prior_on_a_known_configuration():
    kp = torch.tensor([[[0.0, 0.0, 0.33], [0.2, 0.0, 0.33], [0.25, 0.0, 0.33]]])
    # squared distances 0.04, 0.0625, 0.0025 -> 0.06 + 0.0375 + 0.0975 per unordered pair, twice (ordered)
    assert L.keypoint_prior_loss(kp, 10.0, 0.1, 0.33).item() == pytest.approx(10 * 2 * 0.195, rel=1e-5)
    far = torch.tensor([[[-0.5, -0.5, 0.5], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5]]])  # spread out, mean depth 0.5
    assert L.keypoint_prior_loss(far, 10.0, 0.1, 0.33).item() == pytest.approx(10 * 0.17, rel=1e-5)
    batch = torch.cat([kp, far])  # the batch mean of both terms
    assert L.keypoint_prior_loss(batch, 1.0).item() == pytest.approx((2 * 0.195 + 0.17) / 2, rel=1e-5)


def test_deformation_prior_on_known_deltas_and_its_schedule():
    delta = torch.zeros(2, 15, 3)
    delta[0, 0] = torch.tensor([0.1, -0.2, 0.3])
    delta[1, 5, 2] = -1.0
    assert L.deformation_prior_loss(delta, 5.0).item() == pytest.approx(5 * (0.6 + 1.0) / 2)
    assert L.deformation_prior_loss(delta.view(2, 45), 5.0).item() == pytest.approx(4.0)  # raw (B, 3K) too
    weights = {e: L.deformation_prior_weight(e, 5.0) for e in (0, 99, 100, 149, 150, 199, 200, 299)}
    assert weights == {0: 5, 99: 5, 100: 3, 149: 3, 150: 2, 199: 2, 200: 1, 299: 1}


def test_head_pose_loss_sums_angles_and_respects_the_mask():
    pred = torch.tensor([[10.0, 0.0, -5.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 2.0, -5.0], [30.0, 30.0, 30.0]])
    # per angle mean over the batch, summed: (10 + 30) / 2 + (2 + 30) / 2 + (0 + 30) / 2
    assert L.head_pose_loss(pred, target, 20.0).item() == pytest.approx(20 * 51.0)
    mask = torch.tensor([True, False])
    assert L.head_pose_loss(pred, target, 20.0, mask).item() == pytest.approx(20 * 12.0)
    none = L.head_pose_loss(pred.requires_grad_(True), target, 20.0, torch.tensor([False, False]))
    assert none.item() == 0.0
    none.backward()  # still part of the graph (DDP needs every output to reach the parameters)


# ------------------------------------------------------------------------------------------------ perceptual

def test_pixel_pyramid_fallback_is_zero_for_identical_images_and_l1_by_hand():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    loss = L.PerceptualLoss([1.0, 0.5, 0.25, 0.125], [10.0] * 5, "pixel_pyramid_l1")
    assert loss.name == "pixel_pyramid_l1"
    assert loss(x, x.clone()).item() == 0.0
    y = torch.rand(2, 3, 64, 64)
    single = L.PerceptualLoss([1.0], [10.0] * 5, "pixel_pyramid_l1")
    assert single(x, y).item() == pytest.approx(10 * (x - y).abs().mean().item(), rel=1e-6)
    pyr = L.ImagePyramid([1.0, 0.5, 0.25, 0.125])(x)
    assert [p.shape[-1] for p in pyr] == [64, 32, 16, 8]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A VGG-19 file in torchvision's layout (test fixture; random values: this checks the mechanics only)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = Vgg19Features()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the full torchvision file has a classifier too
    path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
    save_file(state, str(path))
    return path


def test_vgg_perceptual_loss_is_zero_for_identical_images_and_positive_otherwise(vgg_file):
    vgg = load_vgg19(vgg_file)
    assert all(not p.requires_grad for p in vgg.parameters())
    assert list(vgg.state_dict())[:2] == ["features.0.weight", "features.0.bias"]
    loss = L.PerceptualLoss([1.0, 0.5], [10.0] * 5, "vgg19", vgg)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert loss(x, x.detach().clone()).item() == 0.0
    value = loss(x, torch.rand(1, 3, 32, 32))
    assert value.item() > 0
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_vgg_file_missing_corrupt_or_foreign_is_refused(tmp_path, vgg_file):
    with pytest.raises(WeightsError, match="not found"):
        load_vgg19(tmp_path / "nope.pth")
    bad = tmp_path / "vgg19.pth"
    bad.write_bytes(b"\x80\x02garbage that is not a pickle of tensors")
    with pytest.raises(WeightsError, match="vgg19.pth"):
        load_vgg19(bad)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(vgg_file.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="cut.safetensors"):
        load_vgg19(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(foreign))  # most tensors missing
    with pytest.raises(WeightsError, match="missing"):
        load_vgg19(foreign)
    with pytest.raises(ValueError, match="VGG-19 weights"):
        L.PerceptualLoss([1.0], [10.0], "vgg19", None)


# ------------------------------------------------------------------------------------------------ expression

def test_expression_consistency_is_zero_for_identical_frames_and_trains_only_the_generated_frame():
    torch.manual_seed(0)
    phi = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    for p in phi.parameters():
        p.requires_grad_(False)
    d = torch.rand(2, 3, 16, 16)
    assert L.expression_consistency_loss(phi, d, d.clone(), 0.1).item() == 0.0
    y = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss = L.expression_consistency_loss(phi, d, y, 0.1)
    assert loss.item() == pytest.approx(0.1 * F.mse_loss(phi(y), phi(d)).item(), rel=1e-6)
    loss.backward()
    assert y.grad is not None


# ------------------------------------------------------------------------------------------------ layouts

def test_hopenet_and_emonet_have_the_published_state_dict_layouts(tmp_path):
    keys = Hopenet().state_dict().keys()
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight",
              "fc_yaw.weight", "fc_pitch.bias", "fc_roll.weight", "fc_finetune.weight"):
        assert k in keys
    assert sum(1 for k in keys if k.startswith("layer3.") and k.endswith("conv1.weight")) == 6  # ResNet-50
    ekeys = EmoNet().state_dict().keys()
    for k in ("conv1.weight", "conv2.downsample.2.weight", "m0.b1_4.bn1.weight", "m1.b2_plus_1.conv3.weight",
              "top_m_1.conv1.weight", "bl0.weight", "al0.weight", "l1.weight", "conv1x1_input_emo_2.weight",
              "emo_net_2.6.conv3.weight", "emo_fc_2.0.weight", "emo_fc_2.1.running_var", "emo_fc_2.3.bias"):
        assert k in ekeys
    # a Hopenet file written by torch.save (a pickle of tensors, like hopenet_robust_alpha1.pkl) loads
    torch.manual_seed(0)
    net = Hopenet()
    path = tmp_path / "hopenet.pkl"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    loaded = load_hopenet(path)
    angles = loaded(torch.rand(1, 3, 64, 64))
    assert angles.shape == (1, 3) and torch.all(angles.abs() <= 99)
    torch.save({"fc_yaw.weight": torch.zeros(66, 2048)}, tmp_path / "partial.pkl")
    with pytest.raises(WeightsError, match="partial.pkl.*missing"):
        load_hopenet(tmp_path / "partial.pkl")


@pytest.fixture(scope="module")
def tiny_model():
    from anytalk_core.models.config import tiny_config
    from anytalk_core.models.registry import build_model

    torch.manual_seed(0)
    return build_model(tiny_config(), with_discriminator=True)


# ------------------------------------------------------------------------------------------------ warp (not in the seed)

def _identity_field(b: int, d: int, h: int, w: int) -> torch.Tensor:
    from anytalk_core.geometry import coordinate_grid_3d

    return coordinate_grid_3d(d, h, w).unsqueeze(0).expand(b, d, h, w, 3).clone()


def test_warp_loss_is_zero_for_the_identity_field_and_finds_a_shift():
    torch.manual_seed(0)
    source = F.avg_pool2d(torch.rand(2, 3, 36, 36), 3, stride=1, padding=1)[..., 2:34, 2:34]  # smooth (2, 3, 32, 32)
    identity = _identity_field(2, 4, 8, 8)
    assert L.warp_loss(source, source, identity, 3.0, [1.0, 0.5]) == pytest.approx(0.0, abs=1e-6)

    # the driving frame shows the source moved 4 pixels left: the field that samples 4 pixels further right
    driving = torch.cat([source[..., 4:], source[..., -1:].expand(-1, -1, -1, 4)], dim=-1)
    shifted = identity.clone()
    shifted[..., 0] += 4 * 2 / 31
    assert float(L.warp_loss(source, driving, shifted, 1.0, [1.0])) < 1e-6
    assert float(L.warp_loss(source, driving, identity, 1.0, [1.0])) > 0.05

    field = identity.clone().requires_grad_(True)  # the gradient points the field the right way
    L.warp_loss(source, driving, field, 1.0, [1.0, 0.5, 0.25]).backward()
    assert float(field.grad[..., 0].sum()) < 0 and field.grad[..., 2].abs().max() == 0  # depth has no say


def test_warp_loss_scales_with_its_weight_and_averages_scales():
    torch.manual_seed(1)
    source, driving = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    field = _identity_field(1, 2, 4, 4)
    one = L.warp_loss(source, driving, field, 1.0, [1.0])
    assert float(L.warp_loss(source, driving, field, 5.0, [1.0])) == pytest.approx(5 * float(one))
    assert float(one) == pytest.approx(float((source - driving).abs().mean()), rel=1e-5)
    half = F.interpolate(source, size=(8, 8), mode="area") - F.interpolate(driving, size=(8, 8), mode="area")
    both = L.warp_loss(source, driving, field, 1.0, [1.0, 0.5])
    assert float(both) == pytest.approx(0.5 * (float(one) + float(half.abs().mean())), rel=1e-5)


def test_expression_offset_loss_by_hand_and_only_on_the_supervised_keypoints():
    deltas = torch.zeros(2, 5, 2)
    offsets = torch.tensor([[[0.1, -0.2], [0.0, 0.3], [0.0, 0.0]]] * 2)
    assert float(L.expression_offset_loss(deltas, offsets, 2.0)) == pytest.approx(2.0 * 0.6 / 6)
    deltas[:, :3] = offsets
    deltas[:, 3:] = 5.0  # keypoints beyond the landmarks have no target
    assert float(L.expression_offset_loss(deltas, offsets, 2.0)) == 0.0


def test_region_crops_cut_the_box_around_the_points_at_pixel_centres():
    image = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64).repeat(2, 3, 1, 1)
    corners = torch.tensor([[[-0.5, -0.5], [0.5, 0.5], [0.0, 0.2]]] * 2)
    crops = L.region_crops(image, corners, 32, margin=0.0, min_extent=0.1)
    assert crops.shape == (2, 3, 32, 32)
    assert torch.allclose(crops, image[:, :, 16:48, 16:48], atol=1e-2)  # the box [-0.5, 0.5] is pixels 16..47
    one_point = torch.tensor([[[0.25, -0.25]]] * 2)  # no extent: the box is min_extent wide, centred on it
    tiny = L.region_crops(image, one_point, 8, margin=0.5, min_extent=0.25)
    assert torch.allclose(tiny, image[:, :, 20:28, 36:44], atol=1e-2)
    padded = L.region_crops(image, corners, 16, margin=0.25, min_extent=0.1)  # side 1.5: pixels 8..55, every 3rd
    assert torch.allclose(padded[0, 0, 0, 0], image[0, 0, 9, 9], atol=1e-2)


def test_region_loss_sees_only_the_box_and_the_masked_items():
    perceptual = L.PerceptualLoss([1.0, 0.5], [2.0], "pixel_pyramid_l1")
    target = torch.rand(3, 3, 64, 64)
    points = torch.tensor([[[-0.2, 0.3], [0.2, 0.5]]] * 3)
    prediction = target.clone()
    prediction[:, :, :16] = 0.0  # outside every box: the region loss does not see it
    assert float(L.region_loss(perceptual, prediction, target, points, torch.ones(3, dtype=torch.bool), 1.0, 16,
                               0.5, 0.25)) == pytest.approx(0.0, abs=1e-6)
    prediction[1, :, 44:52, 28:36] += 0.5  # inside item 1's box
    mask = torch.tensor([True, True, False])
    got = L.region_loss(perceptual, prediction, target, points, mask, 3.0, 16, 0.5, 0.25)
    crops = L.region_crops(torch.cat([prediction[:2], target[:2]]), points[:2].repeat(2, 1, 1), 16, 0.5, 0.25)
    assert float(got) == pytest.approx(3.0 * float(perceptual(crops[:2], crops[2:])), rel=1e-6) and float(got) > 0
    assert float(L.region_loss(perceptual, prediction, target, points, torch.tensor([True, False, False]), 3.0, 16,
                               0.5, 0.25)) == pytest.approx(0.0, abs=1e-6)
    leaf = prediction.clone().requires_grad_()
    none = L.region_loss(perceptual, leaf, target, points, torch.zeros(3, dtype=torch.bool), 1.0, 16, 0.5, 0.25)
    none.backward()
    assert float(none.detach()) == 0.0 and leaf.grad is not None and not leaf.grad.any()
    leaf.grad = None
    L.region_loss(perceptual, leaf, target, points, mask, 1.0, 16, 0.5, 0.25).backward()
    assert not leaf.grad[:, :, :30].any() and leaf.grad[1].abs().sum() > 0  # the box is y in [0, 0.8]: rows 31..57
    assert not leaf.grad[2].any()  # masked out
