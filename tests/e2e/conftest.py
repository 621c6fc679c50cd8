"""Browser checks of every page run in a small clinic (tests/clinic.py)."""

from tests.clinic import clinic  # noqa: F401
from tests.identity.conftest import _clock_back, env, smtp  # noqa: F401
