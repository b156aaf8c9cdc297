"""The product-image classifier: a small CNN over Fashion-MNIST, and its training task.

No Spark import: ranks and scoring workers import only torch and numpy.

The network takes the raw grey levels as they are stored (`silver.product_images.pixels`:
784 values 0..255, row-major 28x28, any numeric dtype) and scales them itself, with fixed
constants, so training, validation, test evaluation and batch scoring cannot disagree on
the preprocessing, and the registered MLflow model accepts the table's pixels directly.

Architecture: two 3x3 convolution blocks (32 then 64 channels, ReLU, 2x2 max pooling), a
128-unit fully connected layer and the 10-class output, with dropout before and after the
hidden layer. Each image is computed on its own (no batch normalisation), so a prediction
does not depend on which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from retail_lake.images.inputs import (
    CLASSES,
    PIXEL_MEAN,
    PIXEL_STD,
    PIXELS,
    SIDE,
)

# Images per forward pass in evaluation and scoring: bounds memory, not results (a
# prediction does not depend on its batch); small chunks stay in cache (fastest on CPU).
EVAL_CHUNK = 128


class ProductCNN(nn.Module):
    """(B, 784) raw pixels 0..255 -> (B, 10) class logits."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(c2 * (SIDE // 4) ** 2, hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, CLASSES),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float().reshape(-1, 1, SIDE, SIDE)
        x = (x / 255.0 - PIXEL_MEAN) / PIXEL_STD
        return self.classifier(self.features(x))


def build_network(channels: tuple[int, int] = (32, 64), hidden: int = 128) -> ProductCNN:
    return ProductCNN(channels, hidden)


def as_pixels(values: Any) -> torch.Tensor:
    """A (B, 784) float tensor from a tensor, a numpy matrix or a sequence of 784-value rows.

    Raises:
        ValueError: when a row does not hold exactly 784 values.
    """
    if torch.is_tensor(values):
        t = values
    else:
        arr = np.asarray(values)
        if arr.dtype == object:  # a pandas column of arrays
            arr = np.stack(arr) if len(arr) else np.zeros((0, PIXELS))
        t = torch.as_tensor(arr)
    t = t.float()
    if t.ndim != 2 or t.shape[1] != PIXELS:
        raise ValueError(f"pixels: expected (n, {PIXELS}) values, got shape {tuple(t.shape)}")
    return t


def mirrored(pixels: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """(B, 784) pixels with the rows where `which` (B,) is true mirrored left-right."""
    images = pixels.reshape(-1, SIDE, SIDE)
    out = torch.where(which[:, None, None], images.flip(2), images)
    return out.reshape(-1, PIXELS)


def predict_proba(net: nn.Module, pixels: Any, chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Class probabilities (n, 10) as float64, computed in eval mode in batches of exactly
    `chunk` images (the last one padded with blank images).

    The kernels of CPUs with wide vector units (AVX-512) pick their algorithm by batch size,
    and the last bits of an image's result then depend on how many images it was scored
    with; at one fixed batch size they do not, so an image scores the same bits however the
    images are split into calls (Spark's batches): a re-run of classify_images rewrites no
    row."""
    x = as_pixels(pixels)
    was_training = net.training
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            batch = x[start : start + chunk]
            n = len(batch)
            if n < chunk:
                blank = torch.zeros((chunk - n, *batch.shape[1:]), dtype=batch.dtype)
                batch = torch.cat([batch, blank])
            logits = net(batch)[:n]
            out.append(torch.softmax(logits.double(), dim=1).numpy())
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, CLASSES))


class ImageTask:
    """The classifier's `training.loop.Task`: cross-entropy on the batch's `pixels` (B, 784)
    and `label` (B,) columns; validation reports the summed loss and correct predictions,
    so the loop's `val_accuracy` is top-1 accuracy over the whole validation set.

    flip: each training image is mirrored left-right with probability 1/2 (a garment seen
    from its mirror side is the same category); validation, test and scoring never flip."""

    name = "product_image_classifier"
    monitor = "accuracy"
    higher_is_better = True

    def __init__(
        self, channels: tuple[int, int] = (32, 64), hidden: int = 128, flip: bool = False
    ) -> None:
        self.channels, self.hidden, self.flip = tuple(channels), int(hidden), bool(flip)

    def build(self) -> ProductCNN:
        return build_network(self.channels, self.hidden)

    def batch_loss(self, net, batch: Mapping[str, Any], device):
        x = as_pixels(batch["pixels"])
        if self.flip:
            x = mirrored(x, torch.rand(len(x)) < 0.5)
        x = x.to(device)
        y = torch.as_tensor(batch["label"]).long().to(device)
        return nn.functional.cross_entropy(net(x), y)

    def evaluate(self, net, data: Mapping[str, np.ndarray], device) -> dict[str, float]:
        x = as_pixels(data["pixels"])
        y = torch.as_tensor(np.asarray(data["label"])).long()
        loss = correct = 0.0
        with torch.no_grad():
            for start in range(0, len(x), EVAL_CHUNK):
                logits = net(x[start : start + EVAL_CHUNK].to(device)).cpu()
                target = y[start : start + EVAL_CHUNK]
                loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
                correct += float((logits.argmax(dim=1) == target).sum())
        return {"count": float(len(x)), "loss": loss, "accuracy": correct}
