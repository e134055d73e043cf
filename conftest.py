"""pytest settings for the whole suite: a temporary project home, and proof that the checkout is untouched.

Every test and every notebook kernel (nbval starts kernels with this process's environment) reads
and writes only a temporary project home: ``LABKIT_HOME`` points at a fresh folder for the whole
session, so ``data/``, ``runs/``, ``outputs/`` and ``report_figures/`` of the checkout (a student's
trained runs and the files the course grades) are never read or overwritten by a test.

To prove it, the session starts by putting a sentinel file into each of those four folders of the
checkout and recording every file there (see ``tests/hermetic.py``); the last test of the
session, ``tests/test_hermetic.py::test_the_suite_leaves_the_checkout_untouched``, checks that
nothing was added, removed or changed, and the session then removes the sentinels again.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent
sys.path.insert(0, str(CHECKOUT / "tests"))

from hermetic import CheckoutSnapshot  # noqa: E402

TEST_HOME = Path(tempfile.mkdtemp(prefix="labkit-test-home-"))
os.environ["LABKIT_HOME"] = str(TEST_HOME)
os.environ["LABKIT_PROFILE"] = "smoke"  # the notebooks run under the smoke profile (unit tests pass their own configs)
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in the tests or the notebook kernels

# The student notebooks stop at their first empty exercise by design: nbval runs the full notebooks only;
# tests/test_exercises.py checks the student versions.
collect_ignore = ["notebooks/student"]


def pytest_configure(config):
    config.checkout_snapshot = CheckoutSnapshot(CHECKOUT)


def pytest_collection_modifyitems(session, config, items):
    """Run the sentinel check last, after every unit test and notebook."""
    last = [item for item in items if item.nodeid.endswith("test_the_suite_leaves_the_checkout_untouched")]
    items[:] = [item for item in items if item not in last] + last


def pytest_unconfigure(config):
    snapshot = getattr(config, "checkout_snapshot", None)
    if snapshot is not None:
        snapshot.remove_sentinels()
    shutil.rmtree(TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def checkout_snapshot(request) -> CheckoutSnapshot:
    return request.config.checkout_snapshot


@pytest.fixture(scope="session")
def test_home() -> Path:
    """The session's temporary project home (``LABKIT_HOME``)."""
    return TEST_HOME
