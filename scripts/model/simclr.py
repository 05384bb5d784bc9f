"""SimCLR projection head and the model that pairs it with an encoder.

- :func:`build_projection_head`: the SimCLR MLP head (Chen et al. 2020, google-research/simclr
  ``tf2/model.py``): ``num_layers`` dense layers, the hidden ones Dense → BN → ReLU, the last
  Dense → BN with no centre (``center=False``) and no ReLU; that last BN computes and
  outputs float32 under a mixed-precision policy too. Dense layers carry no bias (the
  batch norm that follows shifts instead). Batch-norm layer names contain
  ``batch_normalization`` so LARS finds them by ``variable.path``.
- :class:`SimCLRModel`: encoder + head; ``model(images)`` returns ``(representation,
  projection)``; :meth:`SimCLRModel.embed` returns the representation (what analyse uses).
  The contrastive train step lives in the train stage, not here.

Both are ``.keras``-serialisable (registered under the package ``"simclr"``) and trackable
by ``tf.train.Checkpoint``.
"""

from __future__ import annotations

import logging
from typing import Sequence

import keras
from keras import layers

from scripts.model.resnet import BN_EPSILON, BN_MOMENTUM, BatchNormFactory, build_resnet

logger = logging.getLogger(__name__)

SERIALIZATION_PACKAGE = "simclr"


def build_projection_head(
    input_dim: int,
    num_layers: int = 2,
    hidden_dim: int | None = None,
    output_dim: int = 128,
    batch_norm_factory: BatchNormFactory = layers.BatchNormalization,
    name: str = "projection_head",
) -> keras.Model:
    """Build the SimCLR projection head.

    Args:
        input_dim: length of the encoder representation.
        num_layers: number of dense layers (≥ 1); the first ``num_layers - 1`` are hidden.
        hidden_dim: width of the hidden layers (default: ``input_dim``, as in SimCLR).
        output_dim: length of the projection that enters the contrastive loss.
        batch_norm_factory: callable building a batch-norm layer from
            ``keras.layers.BatchNormalization`` keyword arguments (synchronised BN goes here).
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(N, input_dim)`` to ``(N, output_dim)``.
    """
    if num_layers < 1:
        raise ValueError(f"projection head needs num_layers >= 1 (train.model.head.num_layers), got {num_layers}")
    if input_dim < 1 or output_dim < 1:
        raise ValueError(f"projection head dims must be >= 1, got input_dim={input_dim}, output_dim={output_dim}")
    hidden_dim = int(input_dim if hidden_dim is None else hidden_dim)
    inputs = keras.Input(shape=(int(input_dim),), name="representation")
    x = inputs
    for i in range(1, num_layers):
        x = layers.Dense(hidden_dim, use_bias=False, kernel_initializer="he_normal",
                         name=f"head_dense{i}")(x)
        x = batch_norm_factory(name=f"head_batch_normalization{i}", momentum=BN_MOMENTUM,
                               epsilon=BN_EPSILON)(x)
        x = layers.ReLU(name=f"head_relu{i}")(x)
    x = layers.Dense(int(output_dim), use_bias=False, kernel_initializer="he_normal",
                     name=f"head_dense{num_layers}")(x)
    # float32 even under mixed precision: the projection enters NT-Xent, whose logits are
    # cosines / temperature (a bfloat16 projection would round them by ~0.4 % / τ)
    x = batch_norm_factory(name=f"head_batch_normalization{num_layers}", momentum=BN_MOMENTUM,
                           epsilon=BN_EPSILON, center=False, dtype="float32")(x)
    return keras.Model(inputs, x, name=name)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class SimCLRModel(keras.Model):
    """Encoder + projection head.

    ``call(images, training)`` returns ``(representation, projection)``: the pooled encoder
    output ``(N, D)`` and the head's ``(N, output_dim)``. Only the representation is kept
    after training (``embed``); the projection feeds the NT-Xent loss.
    """

    def __init__(self, encoder: keras.Model, head: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head

    def build(self, input_shape=None):
        """Both parts are functional models, built at construction; nothing to create."""
        self.built = True

    def call(self, images, training=None):
        representation = self.encoder(images, training=training)
        projection = self.head(representation, training=training)
        return representation, projection

    def embed(self, images, training=False):
        """Representation ``(N, D)`` of ``images`` (batch norm in inference mode by default)."""
        return self.encoder(images, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=keras.saving.serialize_keras_object(self.head),
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"), custom_objects=custom_objects)
        head = keras.saving.deserialize_keras_object(config.pop("head"), custom_objects=custom_objects)
        return cls(encoder=encoder, head=head, **config)


def build_simclr_model(
    depth: int,
    input_shape: Sequence[int],
    width_multiplier: float = 1.0,
    stem: str = "standard",
    head_layers: int = 2,
    head_hidden_dim: int | None = None,
    head_output_dim: int = 128,
    batch_norm_factory: BatchNormFactory = layers.BatchNormalization,
    name: str = "simclr",
) -> SimCLRModel:
    """ResNet encoder (:func:`scripts.model.resnet.build_resnet`) + projection head, built."""
    encoder = build_resnet(depth, input_shape, width_multiplier=width_multiplier, stem=stem,
                           batch_norm_factory=batch_norm_factory, name="encoder")
    head = build_projection_head(encoder.output.shape[-1], num_layers=head_layers,
                                 hidden_dim=head_hidden_dim, output_dim=head_output_dim,
                                 batch_norm_factory=batch_norm_factory, name="projection_head")
    model = SimCLRModel(encoder, head, name=name)
    model.build((None, *tuple(int(s) for s in input_shape)))
    logger.info("SimCLR model: ResNet-%d ×%g (%s stem) on %s, head %d layers → %d; %d parameters",
                depth, width_multiplier, stem, tuple(input_shape), head_layers, head_output_dim,
                model.count_params())
    return model
