"""Ctrl-C stops long Rust work promptly — fit, init (building a Trainer) and
predict — and leaves the model at a step boundary, consistent and usable."""

import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = r"""
import sys, time, numpy as np, kronnet as kn
what = sys.argv[1]
data = kn.make_kronecker_data(256, dims=(16, 16), seed=0)
net = kn.TwoLayerNet(data.dims, 2048, seed=0)
tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
tr.fit(50)
big = kn.make_kronecker_data(512, dims=(512, 512), seed=1)   # init: O(n m d) ~ minutes
wide = kn.TwoLayerNet(big.dims, 4096, seed=0)
print("ready", flush=True)
try:
    if what == "fit":
        tr.fit(10**7)
    elif what == "init":
        kn.Trainer(wide, big, lr=1.0)
    else:
        wide.predict(big)
    print("finished", flush=True)
except KeyboardInterrupt as exc:
    caught = time.time()
    hist = getattr(exc, "history", None)
    # The trainer is at a step boundary: its count matches what ran, the
    # loss it reports is the loss of the current weights, and it goes on.
    if what == "fit":
        assert hist is not None and tr.steps_done == 50 + hist.steps, (tr.steps_done, hist)
    loss = tr.full_loss()
    pred = net.predict(data)
    assert abs(np.mean((pred - data.y) ** 2) / 2 - loss) <= 1e-9 * loss + 1e-14, (loss, pred[:3])
    tr.fit(20)
    print("interrupted", repr(caught), flush=True)
"""


@pytest.mark.parametrize("what", ["fit", "init", "predict"])
def test_sigint_stops_long_work_promptly_and_leaves_a_usable_model(what):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, what], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # well inside the long call
        sent = time.time()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    words = out.split()
    assert words[0] == "interrupted", out
    latency = float(words[1]) - sent
    # The issue asks for 0.5 s; the bound here leaves room for a loaded CI
    # machine (the note reports the measured latencies).
    assert latency < 1.5, f"KeyboardInterrupt took {latency:.2f} s"
