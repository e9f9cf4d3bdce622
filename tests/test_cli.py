"""The `kronnet` command and `python -m kronnet`."""

import re
import subprocess
import sys

ARGS = [
    "demo",
    "--n",
    "64",
    "--dims",
    "8",
    "8",
    "--width",
    "256",
    "--steps",
    "400",
    "--compare-steps",
    "2",
    "--no-progress",
]


def check_demo_output(out):
    assert "full training loss" in out
    m = re.search(r"loss fell ([0-9.e+]+)x", out)
    assert m and float(m.group(1)) > 100
    assert "kronecker backend" in out and "dense backend" in out
    rel = float(re.search(r"max relative loss difference ([0-9.e+-]+)", out).group(1))
    assert rel < 1e-9


def test_console_script_demo():
    out = subprocess.run(["kronnet", *ARGS], capture_output=True, text=True, check=True).stdout
    check_demo_output(out)


def test_python_m_demo():
    out = subprocess.run([sys.executable, "-m", "kronnet", *ARGS], capture_output=True, text=True, check=True).stdout
    check_demo_output(out)


def test_unknown_command_fails_cleanly():
    res = subprocess.run([sys.executable, "-m", "kronnet", "nope"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "invalid choice" in res.stderr
