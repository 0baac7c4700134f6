import pytest

from gan_dist.config import load_config, parse_override
from gan_dist.errors import UserError


def test_default_preset_trains_locally_on_embedded_digits():
    cfg = load_config()
    assert cfg.preset == "dcgan-digits"
    assert cfg.data.path is None
    assert cfg.run.resolved_backend() == "local"


def test_overrides_are_typed_yaml_scalars():
    cfg = load_config(None, dict([parse_override("train.lr_g=1e-4"), parse_override("run.gpu=true")]))
    assert cfg.train.lr_g == pytest.approx(1e-4)
    assert cfg.run.gpu is True


def test_several_workers_choose_the_ray_backend():
    assert load_config(None, {"run.num_workers": 2}).run.resolved_backend() == "ray"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.lrr": 1}, "unknown config key 'train.lrr'"),
        ({"train.steps": 0}, "bad config value train.steps=0"),
        ({"train.batch_size": "many"}, "bad config value train.batch_size='many'"),
        ({"run.backend": "local", "run.num_workers": 2}, "local backend runs one process"),
        ({"train.steps.deep": 1}, "unknown config key 'train.steps.deep'"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match="presets: dcgan-64, dcgan-digits, resnet-sn-32"):
        load_config("no-such-preset")


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(UserError, match="expected key=value"):
        parse_override("train.steps")
