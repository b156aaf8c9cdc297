"""What the product-image CNN reads: image size, classes and the fixed input scaling.

No torch import: the Spark side (training job, scoring rows) shares these with the network
(`images.model`) without loading torch.
"""

from __future__ import annotations

SIDE = 28
PIXELS = SIDE * SIDE
CLASSES = 10
# Fashion-MNIST's training-set mean and standard deviation of pixel/255: fixed constants,
# not statistics of the run, so the model's input scaling never drifts with the data.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530
