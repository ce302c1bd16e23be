"""Where MGSM comes from when MGSM_DATA_DIR is unset (issue #20): the folder beside the checkout,
else the hub, but never ~25 s of hub retries and a 40-line traceback on a machine without network."""

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from marco_eval.errors import DataError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tasks"))
import mgsm_utils  # noqa: E402


@pytest.fixture
def no_local_data(monkeypatch, tmp_path):
    """MGSM_DATA_DIR unset, no folder beside the checkout, no offline flags."""
    for name in ("MGSM_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mgsm_utils, "SHARED_DATA", tmp_path / "no-shared" / "data" / "mgsm")


def forbid(monkeypatch, module, name):
    def called(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} must not be called here")
    monkeypatch.setattr(module, name, called)


def no_network(monkeypatch):
    """Every request fails as on a machine without DNS."""
    def urlopen(request, timeout=None):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connecting is refused


def test_the_folder_beside_the_checkout_is_the_one_tests_and_the_makefile_use():
    assert mgsm_utils.SHARED_DATA == REPO.parent / "shared" / "data" / "mgsm"


def test_no_network_fails_in_one_line_naming_mgsm_data_dir_before_asking_the_hub(no_local_data, monkeypatch):
    import datasets

    no_network(monkeypatch)
    forbid(monkeypatch, datasets, "load_dataset")  # the hub client (and its retries) is never reached
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        mgsm_utils.load_mgsm_en()
    assert time.monotonic() - started < 2
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("mgsm_en: MGSM_DATA_DIR is unset and the Hugging Face hub (https://huggingface.co) "
                              "is unreachable ([Errno -2] Name or service not known); set MGSM_DATA_DIR to a folder "
                              "holding mgsm_en.tsv")
    assert "HF_HUB_OFFLINE=1" in message


def test_the_probe_itself_sees_a_hub_that_is_not_there(monkeypatch):
    """No monkeypatched network here: a hub endpoint on a closed local port refuses at once."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    why = mgsm_utils.hub_unreachable()
    assert why is not None and "refused" in why.lower() and time.monotonic() - started < 2


def test_offline_flags_skip_the_probe_and_a_cache_miss_is_one_line(no_local_data, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forbid(monkeypatch, urllib.request, "urlopen")

    def cache_miss(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'juletxara/mgsm' on the Hub (OfflineModeIsEnabled)\nmore lines")
    monkeypatch.setattr(datasets, "load_dataset", cache_miss)
    with pytest.raises(DataError) as e:
        mgsm_utils.load_mgsm_zh()
    assert str(e.value) == (
        "mgsm_zh: MGSM_DATA_DIR is unset and HF_HUB_OFFLINE is set and the Hugging Face cache could not give "
        "juletxara/mgsm (Couldn't reach 'juletxara/mgsm' on the Hub (OfflineModeIsEnabled)); set MGSM_DATA_DIR to a "
        "folder holding mgsm_zh.tsv (question<TAB>answer) and mgsm_exemplars_en_zh.json, or, with a copy in the "
        "Hugging Face cache, HF_HUB_OFFLINE=1")


def test_with_network_the_hub_is_still_used(no_local_data, monkeypatch):
    import datasets

    asked = []

    def urlopen(request, timeout=None):
        asked.append((request.get_method(), request.full_url, timeout))
        return io.BytesIO(b"")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name: ("hub", path, name))
    assert mgsm_utils.load_mgsm_en() == ("hub", "juletxara/mgsm", "en")
    assert asked == [("HEAD", "https://huggingface.co/api/datasets/juletxara/mgsm", mgsm_utils.HUB_PROBE_SECONDS)]
    # Any HTTP answer means the hub is there (its own client decides what to do with it).
    def forbidden(request, timeout=None):
        raise urllib.error.HTTPError(request.full_url, 403, "Forbidden", {}, None)
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    assert mgsm_utils.hub_unreachable() is None


def test_a_hub_failure_after_the_probe_is_one_line_too(no_local_data, monkeypatch):
    import datasets

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: io.BytesIO(b""))

    def fails(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'juletxara/mgsm' on the Hub (ReadTimeout)\n  File ...\n  more")
    monkeypatch.setattr(datasets, "load_dataset", fails)
    with pytest.raises(DataError, match=r"^mgsm_en: MGSM_DATA_DIR is unset and the Hugging Face hub could not give "
                                        r"juletxara/mgsm \(Couldn't reach .* \(ReadTimeout\)\); set MGSM_DATA_DIR") as e:
        mgsm_utils.load_mgsm_en()
    assert "\n" not in str(e.value)


def test_the_folder_beside_the_checkout_is_used_and_said_in_one_line(no_local_data, monkeypatch, tmp_path, capsys):
    shared = tmp_path / "shared" / "data" / "mgsm"
    shared.mkdir(parents=True)
    (shared / "mgsm_en.tsv").write_text("A test question with 2 apples?\t2\nAnother test question?\t5\n")
    monkeypatch.setattr(mgsm_utils, "SHARED_DATA", shared)
    forbid(monkeypatch, urllib.request, "urlopen")
    data = mgsm_utils.load_mgsm_en()
    assert data["test"]["answer_number"] == ["2", "5"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MGSM_DATA_DIR is unset, so reading MGSM from " + str(shared) in err
    # MGSM_DATA_DIR, when set, wins, silently.
    monkeypatch.setenv("MGSM_DATA_DIR", str(shared))
    mgsm_utils.load_mgsm_en()
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # starts lm-eval in a subprocess: about 20 s of CPU
def test_lm_eval_without_data_or_network_is_one_line_and_quick(tmp_path, smollm_path):
    """The whole path a user takes: lm_eval loads the task, the task finds no data and no hub.
    The task files are run from a copy outside the checkout (no ../shared beside it), the hub
    endpoint is a closed local port, and our own tasks/ is not registered (MARCO_EVAL_NO_TASKS)."""
    tasks = tmp_path / "clone" / "tasks"
    tasks.mkdir(parents=True)
    for name in ("mgsm_en.yaml", "mgsm_utils.py"):
        (tasks / name).write_bytes((REPO / "tasks" / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("MGSM_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", MARCO_EVAL_NO_TASKS="1", OMP_NUM_THREADS="1")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "marco_eval.cli", "run", "--model", "marco_mcts", "--model_args",
                           f"pretrained={smollm_path}", "--tasks", "mgsm_en", "--include_path", str(tasks),
                           "--limit", "1", "--output_path", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("marco-eval: error: mgsm_en: MGSM_DATA_DIR is unset and the Hugging Face hub") and \
        "refused" in last.lower(), proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
    # lm-eval spends most of this indexing its own tasks (~15 s on a loaded 2-core machine); the task fails in ms.
    assert elapsed < 120, elapsed
