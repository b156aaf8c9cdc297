"""Sales forecasting: store-day features, training windows, the LSTM forecaster, forecasts."""
