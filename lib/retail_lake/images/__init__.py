"""Product images: Fashion-MNIST IDX files into bronze and silver."""
