"""Store sales (Rossmann): cleansing, store-day features, the sales forecaster."""
