"""Page tests run in a small clinic (tests/clinic.py)."""

from tests.clinic import clinic, told  # noqa: F401
from tests.identity.conftest import _clock_back, env, smtp  # noqa: F401
