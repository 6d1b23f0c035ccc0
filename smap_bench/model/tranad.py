"""TranAD (Tuli et al., VLDB 2022) in PyTorch, written from the paper's description.

The network reads a window ``W`` (``[B, K, m]``, already normalised to about ``[0, 1]``)
together with a *focus* input ``F`` of the same shape, encodes ``[W ; F]`` with a
transformer encoder, and reconstructs the window with two decoders:

* phase 1: ``F = 0``; decoder 1 gives ``O1``, decoder 2 gives ``O2``;
* phase 2: ``F = (O1 - W)^2`` (self-conditioning on phase 1's error); decoder 2 gives ``Ô2``.

With a ``horizon`` (:class:`TranADConfig`), the network reads the window with the telemetry
value of its newest records hidden (:func:`hide_newest`) and is trained to reconstruct the
whole true window, so those records are forecast rather than copied.

Training is adversarial with an epoch-dependent weight ``w_n`` (``1/n`` at epoch ``n``):
decoder 1 and the encoder minimise ``w_n |O1-W|² + (1-w_n) |Ô2-W|²`` while decoder 2
minimises ``w_n |O2-W|² - (1-w_n) |Ô2-W|²`` (see :mod:`smap_bench.model.train`). The anomaly
score of a record is ``½|O1-W|² + ½|Ô2-W|²`` per feature, weighted over features by
:class:`ScoringModel`, the module that is exported to ONNX.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TranADConfig:
    """Shape and size of one TranAD network."""

    n_features: int = 25
    window: int = 30
    d_ff: int = 16
    n_heads: int = 5
    n_layers: int = 1
    dropout: float = 0.1
    #: Newest records whose telemetry value (column 0) the network does not see: it
    #: reconstructs them from the older records and their commands, so their score is a
    #: forecast error (0: plain reconstruction, as in the paper).
    horizon: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.horizon < self.window:
            raise ValueError(f"TranAD: horizon {self.horizon} must be in [0, window {self.window})")

    @property
    def d_model(self) -> int:
        """Width of the transformer: the window and its focus input side by side."""
        return 2 * self.n_features

    def as_dict(self) -> dict[str, int | float]:
        """The settings; ``horizon`` only when set (models made before it stay valid)."""
        values = asdict(self)
        if not self.horizon:
            del values["horizon"]
        return values


def hide_newest(window: Tensor, horizon: int) -> Tensor:
    """The window with column 0 of its newest ``horizon`` records replaced by the last
    value before them (the commands, columns 1.., stay: they are known in advance)."""
    if horizon == 0:
        return window
    k = window.shape[1]
    value = window[:, :, :1]
    last_seen = window[:, k - horizon - 1 : k - horizon, :1].expand(-1, horizon, -1)
    hidden = torch.cat((value[:, : k - horizon], last_seen), dim=1)
    return torch.cat((hidden, window[:, :, 1:]), dim=2)


def positional_encoding(length: int, d_model: int) -> Tensor:
    """Sinusoidal position code ``[length, d_model]`` (Vaswani et al.)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model)
    )
    code = torch.zeros(length, d_model)
    code[:, 0::2] = torch.sin(position * rates)
    code[:, 1::2] = torch.cos(position * rates[: d_model // 2])
    return code


class TranAD(nn.Module):
    """Transformer encoder, two reconstruction decoders, two-phase self-conditioning."""

    def __init__(self, config: TranADConfig | None = None) -> None:
        super().__init__()
        self.config = config or TranADConfig()
        cfg = self.config
        if cfg.d_model % cfg.n_heads:
            raise ValueError(
                f"TranAD: d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}"
            )
        self.register_buffer("position", positional_encoding(cfg.window, cfg.d_model))
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, batch_first=True
            ),
            cfg.n_layers,
            enable_nested_tensor=False,
        )
        self.decoder1 = self._decoder()
        self.decoder2 = self._decoder()
        self.head1 = nn.Sequential(nn.Linear(cfg.d_model, cfg.n_features), nn.Sigmoid())
        self.head2 = nn.Sequential(nn.Linear(cfg.d_model, cfg.n_features), nn.Sigmoid())

    def _decoder(self) -> nn.TransformerDecoder:
        cfg = self.config
        layer = nn.TransformerDecoderLayer(
            cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, batch_first=True
        )
        return nn.TransformerDecoder(layer, cfg.n_layers)

    def _embed(self, window: Tensor, focus: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder memory of ``[W ; F]`` and the decoders' query (the window, doubled)."""
        scale = math.sqrt(self.config.n_features)
        position: Tensor = self.position  # type: ignore[assignment]
        memory = self.encoder(torch.cat((window, focus), dim=2) * scale + position)
        query = torch.cat((window, window), dim=2) * scale + position
        return memory, query

    def phase1(self, window: Tensor) -> tuple[Tensor, Tensor]:
        """Both decoders without focus: ``(O1, O2)``."""
        memory, query = self._embed(window, torch.zeros_like(window))
        out1 = self.head1(self.decoder1(query, memory))
        out2 = self.head2(self.decoder2(query, memory))
        return out1, out2

    def phase2(self, window: Tensor, out1: Tensor) -> Tensor:
        """Decoder 2 conditioned on phase 1's squared error: ``Ô2``."""
        memory, query = self._embed(window, (out1 - window) ** 2)
        out: Tensor = self.head2(self.decoder2(query, memory))
        return out

    def forward(self, window: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(O1, O2, Ô2)`` for a normalised window ``[B, K, m]``: reconstructions of the
        whole window, from the window with its newest ``horizon`` values hidden."""
        visible = hide_newest(window, self.config.horizon)
        out1, out2 = self.phase1(visible)
        return out1, out2, self.phase2(visible, out1)


def record_error(window: Tensor, out1: Tensor, out_hat2: Tensor) -> Tensor:
    """Per-record, per-feature anomaly score ``½|O1-W|² + ½|Ô2-W|²`` (``[B, K, m]``)."""
    return 0.5 * (out1 - window) ** 2 + 0.5 * (out_hat2 - window) ** 2


class ScoringModel(nn.Module):
    """The exported graph: raw telemetry in, reconstruction and per-record score out.

    Normalisation (``(x - offset) / scale`` per feature, from the train split) is baked in,
    so the caller sends raw windows. ``reconstruction`` is phase 1's output mapped back to
    raw units; ``score`` is the feature-weighted record error in normalised units.
    """

    def __init__(
        self, model: TranAD, offset: Tensor, scale: Tensor, feature_weights: Tensor
    ) -> None:
        super().__init__()
        n = model.config.n_features
        for name, value in (("offset", offset), ("scale", scale), ("weights", feature_weights)):
            if value.shape != (n,):
                raise ValueError(
                    f"ScoringModel: {name} has shape {tuple(value.shape)}, need ({n},)"
                )
        if not torch.all(scale > 0):
            raise ValueError("ScoringModel: every scale must be positive")
        self.model = model
        self.register_buffer("offset", offset.to(torch.float32).clone())
        self.register_buffer("scale", scale.to(torch.float32).clone())
        self.register_buffer("weights", (feature_weights / feature_weights.sum()).float().clone())

    def forward(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        offset: Tensor = self.offset  # type: ignore[assignment]
        scale: Tensor = self.scale  # type: ignore[assignment]
        weights: Tensor = self.weights  # type: ignore[assignment]
        window = (raw - offset) / scale
        out1, _, out_hat2 = self.model(window)
        score = (record_error(window, out1, out_hat2) * weights).sum(dim=2)
        return out1 * scale + offset, score
