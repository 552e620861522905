"""External tools the tests need (compilers, QEMU, clang's fuzzer)."""
import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The tool's path. Missing, it is a visible skip on a user's machine, but a failure under
    CI=true, where the test command has installed everything."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required under CI=true but is not installed")
        pytest.skip(f"{name} is not installed")
    return path
