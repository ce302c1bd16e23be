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


@pytest.fixture(scope="session")
def smollm_path():
    from marco_eval import models

    if not models.is_pulled("smollm2-135m"):
        pytest.skip("smollm2-135m is not provisioned (make test pulls it)")
    return str(models.model_dir("smollm2-135m"))
