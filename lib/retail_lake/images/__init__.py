"""Image classification: the product-image CNN (training with Horovod) and batch scoring."""
