"""Fixtures and settings shared by test modules."""
import os

import pytest
from hypothesis import settings

from _tools import require_tool

# Under CI the property tests draw the same examples every run: a landing must not depend on
# luck. Locally they keep exploring new examples (and store failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def arm_tools():
    """The ARM cross compiler and QEMU (a visible skip without them, a failure under CI)."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    require_tool("make")
