"""Geography: GeoNames places and countries, and existing store locations, into silver."""
