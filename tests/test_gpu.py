"""The CUDA path of training and scoring (skipped without a GPU). Imports no Spark, so it also
runs on a GPU machine that has only torch: `PYTHONPATH=lib pytest tests/test_gpu.py`."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_forecaster_network_trains_and_scores_on_the_gpu():
    import numpy as np

    from retail_lake.forecasting.network import N_PROFILE, N_STATIC, ForecastTask, prepare
    from retail_lake.training.devices import select_device

    device = select_device(local_rank=0)
    assert device.type == "cuda"
    torch.manual_seed(0)
    lookback, horizon, n = 28, 14, 256
    rng = np.random.default_rng(0)
    dow = ((np.arange(lookback + horizon) % 7) + 1)[None].repeat(n, 0).astype(np.float32)
    promo = (rng.uniform(size=dow.shape) < 0.4).astype(np.float32)
    sales = np.log1p(6000 * (1 + 0.1 * dow) * (1 + 0.3 * promo)).astype(np.float32)
    zeros = np.zeros_like(dow)
    batch = {
        "sales": sales, "customers": sales * 0.7, "open": np.ones_like(dow), "promo": promo,
        "state_holiday": zeros, "school_holiday": zeros, "promo2_active": zeros,
        "day_of_week": dow, "month": np.full_like(dow, 6), "day_of_month": np.full_like(dow, 9),
        "level": np.full(n, np.log1p(8000), np.float32),
        "customers_level": np.full(n, np.log1p(8000) * 0.7, np.float32),
        "static": np.zeros((n, N_STATIC), np.float32),
        "profile": np.zeros((n, N_PROFILE), np.float32),
    }  # fmt: skip
    task = ForecastTask(lookback, horizon, hidden=32)
    net = task.build().to(device)
    assert all(p.is_cuda for p in net.parameters())
    tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    first = float(task.batch_loss(net, tensors, device))
    for _ in range(200):
        optimizer.zero_grad()
        loss = task.batch_loss(net, tensors, device)
        loss.backward()
        optimizer.step()
    assert float(loss) < first * 0.1
    # Scoring moves the weights back to the CPU, as the batch scorer loads them.
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    cpu_net = task.build()
    cpu_net.load_state_dict(state)
    p = prepare(batch, lookback, horizon)
    with torch.no_grad():
        on_gpu = net(p["past"].to(device), p["future"].to(device)).cpu()
        assert torch.allclose(cpu_net(p["past"], p["future"]), on_gpu, atol=1e-4)
