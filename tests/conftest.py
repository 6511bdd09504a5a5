import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for module tests and notebooks (e.g. cuda)")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = request.config.getoption("--device")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"--device {dev} requested but CUDA is not available")
    return torch.device(dev)
