"""The package installs with its compiled masker and a `gateway` command."""

import shutil
import subprocess

import gateway
from gateway import _masker


def test_extension_module_imports() -> None:
    assert _masker.__version__ == gateway.__version__


def test_gateway_command_on_path() -> None:
    exe = shutil.which("gateway")
    assert exe is not None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == gateway.__version__
