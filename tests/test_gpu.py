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
    from retail_lake.forecasting.network import build_network
    from retail_lake.training.devices import select_device

    device = select_device(local_rank=0)
    assert device.type == "cuda"
    torch.manual_seed(0)
    x = torch.randn(4096, 24, device=device)
    y = (x[:, :4].sum(dim=1, keepdim=True) * 0.5).to(device)
    net = build_network(24).to(device)
    assert all(p.is_cuda for p in net.parameters())
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    loss_fn = torch.nn.MSELoss()
    first = loss_fn(net(x), y).item()
    for _ in range(200):
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < first * 0.1
    # Scoring moves the weights back to the CPU, as the batch scorer loads them.
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    cpu_net = build_network(24)
    cpu_net.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(cpu_net(x.cpu()), net(x).cpu(), atol=1e-4)
