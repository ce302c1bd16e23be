import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # `from fakes import ...`
REPO = TESTS.parent
SHARED_MGSM = REPO.parent / "shared" / "data" / "mgsm"
if not os.environ.get("MGSM_DATA_DIR") and SHARED_MGSM.is_dir():
    os.environ["MGSM_DATA_DIR"] = str(SHARED_MGSM)
SHARED_WMT22 = REPO.parent / "shared" / "data" / "wmt22_zhen"
if not os.environ.get("WMT22_ZHEN_DIR") and SHARED_WMT22.is_dir():
    os.environ["WMT22_ZHEN_DIR"] = str(SHARED_WMT22)


@pytest.fixture
def fake_vllm(monkeypatch):
    """The fake `vllm` (tests/fake_vllm) importable as vllm for the test, and forgotten after."""
    monkeypatch.syspath_prepend(str(TESTS / "fake_vllm"))
    sys.modules.pop("vllm", None)
    import vllm

    yield vllm
    sys.modules.pop("vllm", None)


@pytest.fixture
def mgsm_data():
    """For tests that read MGSM itself: without ../shared beside the clone (and MGSM_DATA_DIR
    unset) the task would go to the hub, which a machine without network cannot reach."""
    if not os.environ.get("MGSM_DATA_DIR"):
        pytest.skip("MGSM data absent: set MGSM_DATA_DIR or put shared/data/mgsm beside the repo")
    return Path(os.environ["MGSM_DATA_DIR"])


@pytest.fixture(scope="session")
def smollm_path():
    from marco_eval import models

    if not models.is_pulled("smollm2-135m"):
        pytest.skip("smollm2-135m is not provisioned (make test pulls it)")
    return str(models.model_dir("smollm2-135m"))


@pytest.fixture
def one_thread():
    """Pin torch to one thread for a real-model test: on a shared 2-core machine two threads
    that get preempted are 5-25x slower (a 150-token smollm2 prefill: 1.1 s on one thread,
    3.6-12.5 s on two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
