import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "inputs" / "cifar10_test_1000.npz"


def cifar10_batch(n: int) -> np.ndarray:
    """The first n CIFAR-10 test images, NCHW float32, CIFAR-10 normalisation."""
    images = np.load(CIFAR10)["images"][:n].astype(np.float32) / 255.0
    mean = np.array([125.3, 123.0, 113.9], dtype=np.float32) / 255.0
    std = np.array([63.0, 62.1, 66.7], dtype=np.float32) / 255.0
    return ((images - mean) / std).transpose(0, 3, 1, 2).copy()


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "epsinas_onnx", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=300,
    )


def default_sigint() -> None:
    """Popen's preexec_fn for a child the test will Ctrl-C: a shell runs its
    background jobs with SIGINT ignored, the child would inherit that, and
    Python then installs no KeyboardInterrupt handler (a suite started with
    `&` would see the command ignore the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
