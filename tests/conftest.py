import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files: $ADT_DATA, else ../shared/data/mnist beside the checkout."""
    path = Path(os.environ.get("ADT_DATA", REPO.parent / "shared" / "data" / "mnist"))
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {path} (set ADT_DATA)")
    return path
