"""Fixtures shared by test modules."""
import pytest

from _tools import require_tool


@pytest.fixture(scope="module")
def arm_tools():
    """The ARM cross compiler and QEMU (a visible skip without them, a failure under CI)."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    require_tool("make")
