"""Fashion-MNIST: IDX image and label files into bronze, and product images into silver."""
