"""ResNet encoders, SimCLR projection head and model: shapes, naming for LARS, (de)serialisation."""

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from scripts.model import distribute
from scripts.model.lars import LARS
from scripts.model.resnet import build_resnet, representation_dim
from scripts.model.simclr import SimCLRModel, build_projection_head, build_simclr_model

WIDTH = 0.125


def lars_excluded(path: str) -> bool:
    """LARS's default rule on ``variable.path`` (no decay/adaptation for BN and biases):
    the encoder must work with the optimizer as it is configured by default."""
    patterns = inspect.signature(LARS.__init__).parameters["exclude_from_weight_decay"].default
    return any(re.search(p, path) for p in patterns)


@pytest.mark.parametrize("depth,expected", [(18, 512), (34, 512), (50, 2048)])
@pytest.mark.parametrize("bands", [3, 5])
def test_output_dimension_each_depth_and_band_count(depth, expected, bands):
    model = build_resnet(depth, (32, 32, bands), width_multiplier=WIDTH, stem="small")
    x = np.random.default_rng(depth).normal(size=(2, 32, 32, bands)).astype("float32")
    out = model(x, training=False)
    assert out.shape == (2, int(expected * WIDTH)) == (2, representation_dim(depth, WIDTH))
    assert np.all(np.isfinite(out.numpy()))
    assert model.get_layer("stem_conv").kernel.shape[2] == bands


@pytest.mark.parametrize("depth,torchvision_params", [(18, 11_176_512), (50, 23_508_032)])
def test_full_width_parameter_count_matches_reference_resnet(depth, torchvision_params):
    """Trainable parameters equal torchvision's resnet{18,50} without the fc layer
    (11,689,512 - 513,000 and 25,557,032 - 2,049,000): same architecture, no conv biases."""
    model = build_resnet(depth, (32, 32, 3), width_multiplier=1.0, stem="standard")
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == torchvision_params


def test_stems_spatial_size_before_stage_two():
    x_shape = (32, 32, 5)
    small = build_resnet(18, x_shape, WIDTH, stem="small")
    standard = build_resnet(18, x_shape, WIDTH, stem="standard")
    assert tuple(small.get_layer("stage1_out").output.shape[1:3]) == (32, 32)
    assert tuple(standard.get_layer("stage1_out").output.shape[1:3]) == (8, 8)
    # stages 2–4 halve the map each time
    assert tuple(small.get_layer("stage4_out").output.shape[1:3]) == (4, 4)


def test_lars_default_exclusion_finds_exactly_the_batch_norm_variables():
    model = build_simclr_model(18, (32, 32, 3), WIDTH, stem="small", head_layers=3, head_output_dim=16)
    excluded = [v for v in model.trainable_variables if lars_excluded(v.path)]
    kept = [v for v in model.trainable_variables if not lars_excluded(v.path)]
    # everything 1-D (BN gamma/beta) is excluded, every kernel (conv 4-D, dense 2-D) is kept
    assert excluded and all(len(v.shape) == 1 for v in excluded)
    assert kept and all(len(v.shape) in (2, 4) and v.path.endswith("/kernel") for v in kept)
    bn_layers = [l for m in (model.encoder, model.head) for l in m.layers
                 if isinstance(l, keras.layers.BatchNormalization)]
    n_bn_trainable = sum(len(l.trainable_variables) for l in bn_layers)
    assert len(excluded) == n_bn_trainable
    # convolutions and dense layers carry no bias (batch norm follows each)
    assert not any(getattr(l, "use_bias", False) for m in (model.encoder, model.head) for l in m.layers)


def test_batch_norm_factory_is_used_for_every_batch_norm():
    """Synchronised BN from scripts.model.distribute is injected into encoder and head."""
    created = []

    def factory(**kwargs):
        layer = distribute.batch_norm(True, **kwargs)
        created.append(layer)
        return layer

    model = build_simclr_model(18, (32, 32, 3), WIDTH, stem="small", head_output_dim=8,
                               batch_norm_factory=factory)
    bn_layers = [l for m in (model.encoder, model.head) for l in m.layers
                 if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bn_layers) == len(created) > 0
    assert all(l.synchronized for l in bn_layers)
    assert model(np.zeros((2, 32, 32, 3), "float32"), training=True)[1].shape == (2, 8)


def test_projection_head_structure():
    head = build_projection_head(64, num_layers=3, hidden_dim=32, output_dim=16)
    kinds = [type(l).__name__ for l in head.layers[1:]]
    assert kinds == ["Dense", "BatchNormalization", "ReLU"] * 2 + ["Dense", "BatchNormalization"]
    dense = [l for l in head.layers if isinstance(l, keras.layers.Dense)]
    bns = [l for l in head.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [d.units for d in dense] == [32, 32, 16]
    assert not any(d.use_bias for d in dense)
    assert [b.center for b in bns] == [True, True, False]
    assert bns[-1].beta is None
    out = head(np.ones((4, 64), "float32"))
    assert out.shape == (4, 16)
    # last layer is BN without ReLU: a training-mode batch has zero-mean, signed outputs
    z = head(np.random.default_rng(0).normal(size=(64, 64)).astype("float32"), training=True).numpy()
    assert (z < 0).any() and np.allclose(z.mean(axis=0), 0.0, atol=1e-4)


def test_simclr_model_call_embed_and_keras_round_trip(tmp_path):
    model = build_simclr_model(18, (32, 32, 5), WIDTH, stem="small", head_layers=2, head_output_dim=16)
    x = np.random.default_rng(1).normal(size=(6, 32, 32, 5)).astype("float32")
    model(x, training=True)  # moves BN moving statistics away from their initial values
    for v in model.trainable_variables:  # and the weights away from initialisation
        v.assign(v + 0.01)
    representation, projection = model(x, training=False)
    assert representation.shape == (6, 64) and projection.shape == (6, 16)
    np.testing.assert_array_equal(model.embed(x).numpy(), representation.numpy())

    path = tmp_path / "simclr.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SimCLRModel)
    rep2, proj2 = loaded(x, training=False)
    np.testing.assert_array_equal(rep2.numpy(), representation.numpy())
    np.testing.assert_array_equal(proj2.numpy(), projection.numpy())

    encoder_path = tmp_path / "encoder.keras"
    model.encoder.save(encoder_path)
    np.testing.assert_array_equal(keras.models.load_model(encoder_path)(x).numpy(), representation.numpy())


def test_simclr_model_tf_checkpoint_round_trip(tmp_path):
    kw = dict(depth=18, input_shape=(32, 32, 3), width_multiplier=WIDTH, stem="small", head_output_dim=8)
    model = build_simclr_model(**kw)
    x = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype("float32")
    model(x, training=True)
    for v in model.trainable_variables:
        v.assign(v * 1.1 + 0.01)
    saved = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = build_simclr_model(**kw)
    assert not np.array_equal(fresh(x)[1].numpy(), model(x)[1].numpy())
    tf.train.Checkpoint(model=fresh).restore(saved).assert_consumed()
    np.testing.assert_array_equal(fresh(x)[1].numpy(), model(x)[1].numpy())


def test_bad_arguments_are_rejected_with_the_key():
    with pytest.raises(ValueError, match="depth"):
        build_resnet(20, (32, 32, 3))
    with pytest.raises(ValueError, match="stem"):
        build_resnet(18, (32, 32, 3), stem="tiny")
    with pytest.raises(ValueError, match="num_layers"):
        build_projection_head(8, num_layers=0)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        build_resnet(18, (32, 32), width_multiplier=0.5)


def test_every_architecture_the_schema_accepts_is_a_depth_resnet_builds():
    """The schema validates train.ARCHITECTURE once; the builder relies on its choices."""
    import dataclasses

    from scripts.model.build import depth_of
    from scripts.model.resnet import RESNET_SPECS
    from scripts.params import TrainParams

    conv = next(f for f in dataclasses.fields(TrainParams) if f.name == "architecture").metadata["key"].conv
    names = conv.describe.removeprefix("one of ").split("/")
    assert {depth_of(name) for name in names} == set(RESNET_SPECS)
