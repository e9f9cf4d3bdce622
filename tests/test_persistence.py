"""A trained model leaves the process: save/load, pickle, checkpoint/restore
(docs/format.md). Loaded nets predict bitwise identically, in a new process
too; a restored trainer continues bitwise as the uninterrupted run; bad files
raise FileFormatError naming the file; writes are atomic."""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import kronnet as kn
import numpy as np
import pytest

DIMS = (6, 5)


@pytest.fixture(scope="module")
def data():
    return kn.make_kronecker_data(48, dims=DIMS, seed=2)


@pytest.fixture(scope="module")
def probe():
    return kn.make_kronecker_data(17, dims=DIMS, seed=3)


def trained(data, backend="kron", index="auto", steps=120, width=200):
    net = kn.TwoLayerNet(data.dims, width, seed=4)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), backend=backend, index=index, seed=5)
    tr.fit(steps)
    return net, tr


def test_save_load_predicts_bitwise_in_a_new_process(tmp_path, data, probe):
    net, _ = trained(data)
    # A second training set makes a second coefficient block.
    other = kn.make_kronecker_data(20, dims=DIMS, seed=9)
    kn.Trainer(net, other, lr=kn.suggest_lr(net, 4), batch_size=4).fit(30)
    assert len(net.coefficients) == 2
    path = tmp_path / "net.kronnet"
    net.save(path)
    np.save(tmp_path / "probe0.npy", probe.factors[0])
    np.save(tmp_path / "probe1.npy", probe.factors[1])
    code = (
        "import sys, numpy as np, kronnet as kn\n"
        "d = sys.argv[1]\n"
        "net = kn.load(d + '/net.kronnet')\n"
        "X = [np.load(d + '/probe0.npy'), np.load(d + '/probe1.npy')]\n"
        "np.save(d + '/out.npy', net.predict(X))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    got = np.load(tmp_path / "out.npy")
    want = net.predict(probe)
    assert got.tobytes() == want.tobytes()
    loaded = kn.load(path)
    assert (loaded.dims, loaded.width, loaded.threshold, loaded.seed) == (net.dims, net.width, net.threshold, net.seed)
    for a, b in zip(loaded.coefficients, net.coefficients):
        assert a.alpha.tobytes() == b.alpha.tobytes()
        assert a.data.fingerprint == b.data.fingerprint


def test_loaded_net_trains_on_into_the_same_block(tmp_path, data, probe):
    net, _ = trained(data)
    net.save(tmp_path / "n")
    loaded = kn.load(tmp_path / "n")
    for n in (net, loaded):
        kn.Trainer(n, data, lr=kn.suggest_lr(n, 8), seed=8).fit(40)
    assert len(loaded.coefficients) == 1
    assert loaded.predict(probe).tobytes() == net.predict(probe).tobytes()


@pytest.mark.parametrize("sign", [0.0, -0.0])
def test_a_block_of_zero_alpha_round_trips_bit_for_bit(data, probe, sign):
    """A state whose block has only linear coefficients (a linear start's)
    is rebuilt without copying its zeros; a -0.0 must come back as -0.0,
    and the net must predict as the dense linear model over the points."""
    net = kn.TwoLayerNet(DIMS, 16, seed=4)
    state = net.to_state()
    alpha_t = np.full((data.n, 16), sign)
    beta = np.linspace(-1.0, 1.0, data.n).reshape(-1, 1)
    state.blocks.append(kn.model.BlockState(data.kind, data.to_arrays(), data.y, alpha_t, beta))
    net.load_state(state)
    back = net.to_state().blocks[0]
    assert back.alpha_t.tobytes() == alpha_t.tobytes()
    assert back.beta.tobytes() == beta.tobytes()
    assert not net.coefficients[0].trained
    plain = kn.TwoLayerNet(DIMS, 16, seed=4)
    want = plain.predict(probe) + probe.dense() @ (data.dense().T @ beta[:, 0]) * state.v_scale
    np.testing.assert_allclose(net.predict(probe), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("obj", ["net", "data", "history", "untrained"])
def test_pickle_round_trips(data, probe, obj):
    net, tr = trained(data)
    if obj == "net":
        back = pickle.loads(pickle.dumps(net))
        assert back.predict(probe).tobytes() == net.predict(probe).tobytes()
        assert back.a.tobytes() == net.a.tobytes()
    elif obj == "untrained":
        fresh = kn.TwoLayerNet(DIMS, 64, threshold=0.3, seed=7)
        back = pickle.loads(pickle.dumps(fresh))
        assert back.predict(probe).tobytes() == fresh.predict(probe).tobytes()
        assert back.coefficients == ()
    elif obj == "data":
        back = pickle.loads(pickle.dumps(data))
        assert back.fingerprint == data.fingerprint
        assert back.y.tobytes() == data.y.tobytes()
        assert not back.factors[0].flags.writeable
    else:
        hist = tr.fit(25, eval_every=5)
        back = pickle.loads(pickle.dumps(hist))
        assert back.loss.tobytes() == hist.loss.tobytes()
        assert back.full_loss == hist.full_loss


CHECKPOINT_CASES = [("kron", "scan"), ("kron", "tree"), ("kron", "bits"), ("kron", "auto"), ("dense", "auto")]


@pytest.mark.parametrize("backend,index", CHECKPOINT_CASES)
def test_checkpoint_restore_continues_bitwise(tmp_path, data, probe, backend, index):
    # 200 uninterrupted steps...
    net_a = kn.TwoLayerNet(data.dims, 200, seed=4)
    a = kn.Trainer(net_a, data, lr=kn.suggest_lr(net_a, 8), backend=backend, index=index, seed=5)
    ha = a.fit(200)
    # ...against 100 steps, a checkpoint, a restore and 100 more.
    net_b = kn.TwoLayerNet(data.dims, 200, seed=4)
    b = kn.Trainer(net_b, data, lr=kn.suggest_lr(net_b, 8), backend=backend, index=index, seed=5)
    hb1 = b.fit(100)
    path = tmp_path / "run.ckpt"
    b.checkpoint(path)
    del b, net_b
    r = kn.Trainer.restore(path)
    assert (r.backend, r.steps_done, r.batch_size) == (backend, 100, 8)
    hb2 = r.fit(100)
    assert np.concatenate([hb1.loss, hb2.loss]).tobytes() == ha.loss.tobytes()
    assert r.full_loss() == a.full_loss()
    assert r.net.predict(probe).tobytes() == net_a.predict(probe).tobytes()
    assert r.net.coefficients[0].alpha.tobytes() == net_a.coefficients[0].alpha.tobytes()
    state_a, state_r = a._core.export_state(), r._core.export_state()
    assert state_a["state"].tobytes() == state_r["state"].tobytes()  # P or W
    # The sampler continues mid-epoch exactly.
    assert np.array_equal(r.next_batch(), a.next_batch())


def test_checkpoint_in_a_new_process_continues_bitwise(tmp_path, data):
    net = kn.TwoLayerNet(data.dims, 150, seed=1)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), index="bits", seed=3)
    tr.fit(37)  # mid-epoch
    tr.checkpoint(tmp_path / "c")
    want = tr.fit(63).loss
    code = (
        "import sys, numpy as np, kronnet as kn\n"
        "tr = kn.Trainer.restore(sys.argv[1] + '/c')\n"
        "np.save(sys.argv[1] + '/losses.npy', tr.fit(63).loss)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    assert np.load(tmp_path / "losses.npy").tobytes() == want.tobytes()


def test_mapped_members_read_what_the_file_holds(tmp_path, data):
    """Reader.mapped (a sharded restore's reads) against NumPy's own reading
    of the archive, for a C-order member (P) and a Fortran-order one (α)."""
    from kronnet import fileformat as storage

    net, tr = trained(data)
    path = tmp_path / "run.ckpt"
    tr.checkpoint(path)
    with np.load(path, allow_pickle=False) as z:
        want = {name: z[name] for name in ("block0/alpha", "trainer/state")}
    assert want["block0/alpha"].flags.f_contiguous and want["trainer/state"].flags.c_contiguous
    with storage.Reader(path) as r:
        for name, arr in want.items():
            got = r.mapped(name, np.float64, 2)
            assert isinstance(got, np.memmap) and not got.flags.writeable
            assert got.shape == arr.shape and np.array_equal(got, arr)
            assert np.array_equal(got[3:17], arr[3:17])
        with pytest.raises(kn.FileFormatError, match="missing"):
            r.mapped("block7/alpha", np.float64, 2)
        with pytest.raises(kn.FileFormatError, match="1-D float64"):
            r.mapped("trainer/state", np.float64, 1)


def test_a_crash_during_save_leaves_the_previous_file_intact(tmp_path, data, probe, monkeypatch):
    net, tr = trained(data)
    path = tmp_path / "net.kronnet"
    net.save(path)
    before = path.read_bytes()
    tr.fit(10)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    # Fails while the archive's members are being written, after the
    # temporary file exists.
    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(OSError, match="simulated"):
        net.save(path)
    with pytest.raises(OSError, match="simulated"):
        tr.checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.kronnet"], "the temporary file was left behind"
    assert kn.load(path).width == net.width


def test_save_killed_midway_in_a_subprocess_leaves_the_previous_file(tmp_path, data):
    net, _ = trained(data, width=400)
    path = tmp_path / "net.kronnet"
    net.save(path)
    before = path.read_bytes()
    # The child dies (os._exit, no cleanup) in the middle of writing the
    # archive, as a killed process or a power cut would.
    code = (
        "import os, sys, numpy as np, kronnet as kn\n"
        "net = kn.load(sys.argv[1])\n"
        "real = np.lib.format.write_array\n"
        "count = [0]\n"
        "def dying(*a, **k):\n"
        "    count[0] += 1\n"
        "    if count[0] == 3:\n"
        "        os._exit(9)\n"
        "    return real(*a, **k)\n"
        "np.lib.format.write_array = dying\n"
        "net.save(sys.argv[1])\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(path)], timeout=120)
    assert res.returncode == 9
    assert path.read_bytes() == before
    assert kn.load(path).predict(data).shape == (data.n,)


# -- bad files ------------------------------------------------------------------


def rewrite(src, dst, change):
    """Copies the zip at src to dst, passing (name, bytes) through `change`
    (which returns new bytes, or None to drop the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info.filename, zin.read(info.filename))
            if out is not None:
                zout.writestr(info.filename, out)


def meta_edit(edit):
    def change(name, raw):
        if name != "kronnet.json.npy":
            return raw
        import io

        arr = np.load(io.BytesIO(raw))
        doc = json.loads(arr.tobytes().decode())
        edit(doc)
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8))
        return buf.getvalue()

    return change


@pytest.fixture
def saved(tmp_path, data):
    net, tr = trained(data, steps=30)
    net.save(tmp_path / "net.kronnet")
    tr.checkpoint(tmp_path / "run.ckpt")
    return tmp_path


def check_format_error(path, match, loader=kn.load):
    with pytest.raises(kn.FileFormatError, match=match) as info:
        loader(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("loader", [kn.load, kn.Trainer.restore])
def test_truncated_files_are_refused(saved, loader):
    src = saved / ("run.ckpt")
    raw = src.read_bytes()
    for cut in (0, 10, len(raw) // 3, len(raw) - 30):
        bad = saved / f"cut{cut}"
        bad.write_bytes(raw[:cut])
        check_format_error(bad, "not a kronnet file|cannot be read|missing", loader)


@pytest.mark.parametrize("loader", [kn.load, kn.Trainer.restore])
def test_corrupted_bytes_are_refused(saved, loader):
    raw = (saved / "run.ckpt").read_bytes()
    # Zeroed or flipped bytes anywhere: headers, factors, alpha, P.
    for frac in np.linspace(0.0, 0.99, 23):
        at = int(frac * len(raw))
        for damage in (bytes(16), bytes(b ^ 0x5A for b in raw[at : at + 16])):
            bad = saved / "bad"
            bad.write_bytes(raw[:at] + damage + raw[at + 16 :])
            if bad.read_bytes() == raw:
                continue
            check_format_error(bad, "not a kronnet file|corrupted|damaged|cannot be read|missing|JSON", loader)


def test_wrong_version_kind_and_contents_are_refused(saved):
    src = saved / "net.kronnet"
    cases = {
        "version 4": (
            meta_edit(lambda d: d.update(version=4)),
            "format version 4; this kronnet .* reads versions 1, 2, 3",
        ),
        "bad block kind": (
            meta_edit(lambda d: d["net"].update(block_kinds=["images"])),
            "'block_kinds' must list 'kron' or 'pairs'",
        ),
        "pairs without tables": (
            meta_edit(lambda d: d["net"].update(block_kinds=["pairs"])),
            "block0/table0' is missing",
        ),
        "no version": (meta_edit(lambda d: d.pop("version")), "format version None"),
        "other format": (meta_edit(lambda d: d.update(format="other")), "does not describe a kronnet file"),
        "bad width type": (meta_edit(lambda d: d["net"].update(width="wide")), "'width' has the wrong type"),
        "width mismatch": (meta_edit(lambda d: d["net"].update(width=7)), "inconsistent contents"),
        "missing alpha": (lambda n, raw: None if n == "block0/alpha.npy" else raw, "block0/alpha' is missing"),
        "no metadata": (lambda n, raw: None if n == "kronnet.json.npy" else raw, "without kronnet.json"),
    }
    for label, (change, match) in cases.items():
        bad = saved / label.replace(" ", "_")
        rewrite(src, bad, change)
        check_format_error(bad, match)


def test_version_1_files_still_load(saved):
    # Version 1 (before pairwise blocks) had no block_kinds: every block is
    # KronData.
    def to_v1(doc):
        doc.update(version=1)
        doc["net"].pop("block_kinds")

    old = saved / "v1.kronnet"
    rewrite(saved / "net.kronnet", old, meta_edit(to_v1))
    net = kn.load(saved / "net.kronnet")
    data = net.coefficients[0].data
    assert np.array_equal(kn.load(old).predict(data), net.predict(data))


def test_a_net_file_is_not_a_checkpoint(saved):
    check_format_error(saved / "net.kronnet", "not a training checkpoint", kn.Trainer.restore)
    # but a checkpoint holds a net
    assert kn.load(saved / "run.ckpt").width == 200


def test_loading_never_executes_code(saved):
    # An archive whose member is a pickled object array: numpy would run
    # arbitrary code to rebuild it if pickles were allowed.
    evil = saved / "evil"
    import io

    def change(name, raw):
        if name != "block0/alpha.npy":
            return raw
        buf = io.BytesIO()
        np.save(buf, np.array([os.system], dtype=object), allow_pickle=True)
        return buf.getvalue()

    rewrite(saved / "net.kronnet", evil, change)
    check_format_error(evil, "block0/alpha")
    # A plain .npy array and a text file are not kronnet files either.
    np.save(saved / "plain.npy", np.ones(3))
    check_format_error(saved / "plain.npy", "single .npy array")
    (saved / "text").write_text("hello")
    check_format_error(saved / "text", "not a kronnet file")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        kn.load(tmp_path / "nothing")


def test_format_is_documented_in_the_file(saved):
    with zipfile.ZipFile(saved / "run.ckpt") as z:
        names = set(z.namelist())
        doc = json.loads(np.load(z.open("kronnet.json.npy")).tobytes())
    assert doc["format"] == "kronnet" and doc["version"] == 3 and doc["kind"] == "checkpoint"
    assert doc["kronnet_version"] == kn.__version__
    assert {"block0/factor0.npy", "block0/factor1.npy", "block0/alpha.npy", "trainer/state.npy"} <= names
    assert set(doc["trainer"]) >= {"lr", "batch_size", "index", "backend", "steps_done", "sampler_rng"}
