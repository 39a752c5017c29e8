"""Regenerate ``reference_vectors.npz``: forward passes of the PUBLISHED metric code on fixed inputs.

This script never imports the project. It runs the reference implementations themselves, with the
deterministic stand-in weights of ``refweights.py`` loaded into their own key layouts:

- LPIPS (AlexNet and VGG16 trunks + linear heads): the ``lpips`` package 0.1.4 (``lpips.LPIPS``), whose
  trunks are torchvision's ``alexnet``/``vgg16`` modules;
- the FID InceptionV3: ``pytorch-fid`` 0.3.0 (``pytorch_fid.inception.InceptionV3``, block 3 = 2048-d pool);
- ArcFace: insightface's ``recognition/arcface_torch/backbones/iresnet.py`` (``iresnet18``).

Set-up used for the committed file (no internet needed beyond the package registry):

    pip download --no-deps torchvision lpips==0.1.4 pytorch-fid==0.3.0   # unpack the wheels into DIR
    PYTHONPATH=DIR python tests/data/make_reference_vectors.py --iresnet PATH/iresnet.py

torchvision's compiled operators (nms, roi_align) do not load beside a CPU-only torch of another build;
only its pure-PyTorch model definitions are used here, so when its operator registration fails it is
skipped (see ``_import_torchvision``) - the layers themselves are unaffected.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import refweights  # noqa: E402


def _import_torchvision():
    try:
        import torchvision  # noqa: F401
    except RuntimeError:  # "operator torchvision::nms does not exist": the C++ ops failed to load
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision  # noqa: F401


def _load(module: torch.nn.Module, tag: str, keep=lambda k: True) -> None:
    own = module.state_dict()
    shapes = {k: tuple(v.shape) for k, v in own.items() if keep(k)}
    new = {k: torch.from_numpy(v) for k, v in refweights.state_for(tag, shapes).items()}
    module.load_state_dict({**own, **new}, strict=True)


def inputs() -> dict[str, np.ndarray]:
    from skimage import data
    from skimage.transform import resize

    def crop(img: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
        y, x, h, w = box
        out = resize(img[y:y + h, x:x + w], size, anti_aliasing=True)
        return np.round(out * 255).astype(np.uint8)

    astro, cat, coffee = data.astronaut(), data.chelsea(), data.coffee()
    a = np.stack([crop(astro, (30, 140, 200, 200), (64, 64)), crop(cat, (20, 120, 250, 250), (64, 64)),
                  crop(coffee, (50, 150, 300, 300), (64, 64))])
    rng = np.random.RandomState(7)
    b = np.stack([np.roll(a[0], 3, axis=1), np.clip(a[1].astype(int) + rng.randint(-25, 26, a[1].shape), 0, 255),
                  crop(coffee, (60, 170, 280, 280), (64, 64))]).astype(np.uint8)
    return {
        "lpips_a": a,
        "lpips_b": b,
        "inception_in": np.stack([crop(cat, (0, 50, 300, 380), (64, 80)), crop(astro, (0, 0, 400, 500), (64, 80))]),
        "arcface_in": np.stack([crop(astro, (40, 150, 170, 170), (112, 112)), crop(cat, (30, 130, 220, 220), (112, 112))]),
    }


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iresnet", required=True, help="insightface recognition/arcface_torch/backbones/iresnet.py")
    parser.add_argument("--out", default=str(HERE / "reference_vectors.npz"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    _import_torchvision()
    import lpips
    from pytorch_fid import inception as fid_inception

    data = inputs()
    out = dict(data)

    for net in ("alex", "vgg"):
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False).eval()
        _load(model, f"lpips-{net}", keep=lambda k: not k.startswith("scaling_layer"))
        dist = model(to_tensor(data["lpips_a"]), to_tensor(data["lpips_b"]), normalize=True)
        out[f"lpips_{net}"] = dist.reshape(-1).numpy()

    def stand_in_loader(url, progress=True, **kwargs):  # replaces the download inside fid_inception_v3()
        model = sys._getframe(1).f_locals["inception"]
        own = model.state_dict()
        shapes = {k: tuple(v.shape) for k, v in own.items()}
        state = {k: torch.from_numpy(v) for k, v in refweights.state_for("fid-inception", shapes).items()}
        return {**own, **state}

    fid_inception.load_state_dict_from_url = stand_in_loader
    net = fid_inception.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    out["inception_pool"] = net(to_tensor(data["inception_in"]))[0].reshape(2, 2048).numpy()

    spec = importlib.util.spec_from_file_location("insightface_iresnet", args.iresnet)
    iresnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(iresnet)
    arc = iresnet.iresnet18(dropout=0.0, num_features=512).eval()
    _load(arc, "arcface-r18")
    out["arcface_emb"] = arc((to_tensor(data["arcface_in"]) - 0.5) / 0.5).numpy()

    import torchvision

    out["versions"] = np.array([f"torch {torch.__version__}", f"torchvision {torchvision.__version__}",
                                f"lpips {getattr(lpips, '__version__', '0.1.4')}", "pytorch-fid 0.3.0",
                                "insightface arcface_torch iresnet.py"])
    np.savez_compressed(args.out, **out)
    for k, v in out.items():
        print(k, v.shape, v.dtype, "" if v.dtype.kind in "US" else f"mean|x| {np.abs(v.astype(float)).mean():.4g}")


if __name__ == "__main__":
    main()
