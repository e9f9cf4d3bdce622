"""The file container at its edges: what a save does to modes, symbolic links
and directories, and how a load refuses files that are not kronnet files
(python/kronnet/fileformat.py, docs/format.md).

Every expectation is checked against facts outside kronnet: os.stat modes,
os.readlink, directory listings, what open() does with the same path, and
the type, path and message of the exception.
"""

import io
import json
import os
import stat
import zipfile

import kronnet as kn
import numpy as np
import pytest
from posix_files import umask

pytestmark = pytest.mark.skipif(os.name != "posix", reason="modes, umasks and symbolic links are POSIX")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def net():
    return kn.TwoLayerNet((2, 3), width=8)


@pytest.fixture
def trainer(net):
    tr = kn.Trainer(net, kn.make_kronecker_data(16, dims=(2, 3), seed=0), lr=5.0)
    tr.fit(3)
    return tr


def net_bytes(net):
    """A net's predictions on fixed points, to tell two saved nets apart."""
    return net.predict(kn.make_kronecker_data(4, dims=(2, 3), seed=9)).tobytes()


def temporaries(*directories):
    return [name for d in directories for name in os.listdir(d) if name.startswith(".kronnet-")]


# -- modes ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027], ids=oct)
def test_a_new_file_gets_0666_less_the_umask(tmp_path, net, trainer, mask):
    with umask(mask):
        net.save(tmp_path / "net.kronnet")
        trainer.checkpoint(tmp_path / "run.ckpt")
        # What open() gives a new file under the same umask.
        with open(tmp_path / "by_open", "w"):
            pass
    assert mode(tmp_path / "net.kronnet") == 0o666 & ~mask == mode(tmp_path / "by_open")
    assert mode(tmp_path / "run.ckpt") == 0o666 & ~mask


@pytest.mark.parametrize(
    ("existing", "mask"), [(0o644, 0o077), (0o600, 0o022), (0o640, 0o002), (0o664, 0o022)], ids=oct
)
def test_overwriting_keeps_the_files_mode(tmp_path, net, trainer, existing, mask):
    for name, save in (("net.kronnet", net.save), ("run.ckpt", trainer.checkpoint)):
        path = tmp_path / name
        save(path)
        os.chmod(path, existing)
        before = os.stat(path).st_ino
        with umask(mask):
            save(path)
        assert mode(path) == existing
        # It was replaced (a new inode, by the rename), not written in place.
        assert os.stat(path).st_ino != before
    assert kn.load(tmp_path / "net.kronnet").width == 8
    assert kn.Trainer.restore(tmp_path / "run.ckpt").steps_done == 3


def test_overwriting_keeps_the_files_owner_where_it_may(tmp_path, net):
    path = tmp_path / "net.kronnet"
    net.save(path)
    # Root can give the file away and so must keep a user's ownership, as
    # writing into the file would; anyone else keeps their own.
    owner = (54321, 54320) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    os.chown(path, *owner)
    os.chmod(path, 0o640)
    net.save(path)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == owner
    assert stat.S_IMODE(st.st_mode) == 0o640


def test_the_temporary_file_is_never_more_open_than_the_result(tmp_path, net, monkeypatch):
    path = tmp_path / "net.kronnet"
    net.save(path)
    os.chmod(path, 0o600)
    seen = []
    real = np.lib.format.write_array

    def spying(*args, **kwargs):
        seen.extend(mode(tmp_path / name) for name in temporaries(tmp_path))
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", spying)
    with umask(0o000):
        net.save(path)
    assert seen and set(seen) == {0o600}


def test_a_read_only_file_is_refused_exactly_when_open_refuses_it(tmp_path, net):
    path = tmp_path / "net.kronnet"
    net.save(path)
    os.chmod(path, 0o444)
    before = path.read_bytes()
    try:
        with open(path, "a"):
            pass
    except PermissionError:
        with pytest.raises(PermissionError) as info:
            kn.TwoLayerNet((2, 3), width=8, seed=5).save(path)
        assert info.value.filename == str(path)
        assert path.read_bytes() == before
    else:
        # Root writes anyway, as open() does; the mode stays.
        kn.TwoLayerNet((2, 3), width=8, seed=5).save(path)
        assert path.read_bytes() != before
    assert mode(path) == 0o444
    assert temporaries(tmp_path) == []


# -- symbolic links ----------------------------------------------------------------


def test_saving_through_a_link_writes_its_target_and_keeps_the_link(tmp_path, net, trainer):
    real_dir = tmp_path / "store"
    link_dir = tmp_path / "links"
    real_dir.mkdir()
    link_dir.mkdir()
    target = real_dir / "net.kronnet"
    net.save(target)
    os.chmod(target, 0o640)
    link = link_dir / "current.kronnet"
    os.symlink(os.path.join("..", "store", "net.kronnet"), link)

    other = kn.TwoLayerNet((2, 3), width=8, seed=3)
    other.save(link)
    assert os.path.islink(link)
    assert os.readlink(link) == os.path.join("..", "store", "net.kronnet")
    assert not os.path.islink(target)
    assert mode(target) == 0o640
    assert net_bytes(kn.load(target)) == net_bytes(other) != net_bytes(net)

    trainer.checkpoint(link)
    assert os.readlink(link) == os.path.join("..", "store", "net.kronnet")
    assert kn.Trainer.restore(target).steps_done == 3
    assert sorted(os.listdir(link_dir)) == ["current.kronnet"]
    assert sorted(os.listdir(real_dir)) == ["net.kronnet"]


def test_the_temporary_file_is_made_in_the_targets_directory(tmp_path, net, monkeypatch):
    (tmp_path / "store").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "store" / "net.kronnet"
    net.save(target)
    link = tmp_path / "links" / "net.kronnet"
    os.symlink(target, link)
    renames = []
    real = os.replace

    def recording(src, dst, *args, **kwargs):
        renames.append((os.path.dirname(os.fspath(src)), os.fspath(dst)))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording)
    net.save(link)
    # One rename, from the target's directory onto the target (on the same
    # file system, so it is atomic), not onto the link.
    assert renames == [(os.path.realpath(tmp_path / "store"), os.path.realpath(target))]
    assert os.path.islink(link)


def test_a_chain_of_links_is_followed_to_the_end(tmp_path, net):
    target = tmp_path / "net.kronnet"
    net.save(target)
    os.symlink(target, tmp_path / "one")
    os.symlink(tmp_path / "one", tmp_path / "two")
    kn.TwoLayerNet((2, 3), width=8, seed=4).save(tmp_path / "two")
    assert os.readlink(tmp_path / "two") == str(tmp_path / "one")
    assert os.readlink(tmp_path / "one") == str(target)
    assert net_bytes(kn.load(target)) == net_bytes(kn.TwoLayerNet((2, 3), width=8, seed=4))


def test_a_dangling_link_gets_its_target_created_as_open_would(tmp_path, net):
    link = tmp_path / "net.kronnet"
    os.symlink("made-by-save", link)
    with umask(0o022):
        net.save(link)
    assert os.readlink(link) == "made-by-save"
    assert os.path.isfile(tmp_path / "made-by-save") and not os.path.islink(tmp_path / "made-by-save")
    assert mode(tmp_path / "made-by-save") == 0o644
    assert kn.load(link).width == 8


def test_a_crash_while_saving_through_a_link_leaves_link_and_target(tmp_path, net, monkeypatch):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "net.kronnet"
    net.save(target)
    before = target.read_bytes()
    link = tmp_path / "net.kronnet"
    os.symlink(target, link)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(OSError, match="simulated"):
        kn.TwoLayerNet((2, 3), width=8, seed=6).save(link)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert os.readlink(link) == str(target)
    assert temporaries(tmp_path, tmp_path / "store") == []


def test_a_cycle_of_links_is_an_error_naming_the_path(tmp_path, net):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(OSError) as info:
        net.save(tmp_path / "a")
    assert info.value.filename == str(tmp_path / "a")
    assert os.readlink(tmp_path / "a") == str(tmp_path / "b")
    assert temporaries(tmp_path) == []


# -- destinations that are not files -------------------------------------------------


def test_saving_to_a_directory_names_the_directory(tmp_path, net, trainer):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "keep").write_text("x")
    os.symlink(folder, tmp_path / "to_models")
    for path in (folder, tmp_path / "to_models"):
        for save in (net.save, trainer.checkpoint):
            with pytest.raises(IsADirectoryError) as info:
                save(path)
            assert info.value.filename == str(path)
            assert str(path) in str(info.value)
            assert ".kronnet-" not in str(info.value) and ".tmp" not in str(info.value)
    # Refused before any temporary file was made, and nothing was replaced.
    assert sorted(os.listdir(tmp_path)) == ["models", "to_models"]
    assert os.listdir(folder) == ["keep"]
    assert os.path.islink(tmp_path / "to_models")


def test_a_missing_directory_names_the_path(tmp_path, net):
    path = tmp_path / "absent" / "net.kronnet"
    with pytest.raises(FileNotFoundError) as info:
        net.save(path)
    assert info.value.filename == str(path)
    assert not (tmp_path / "absent").exists()


def test_a_special_file_is_not_replaced(tmp_path, net):
    # A named pipe stands for any non-regular file (a device such as
    # /dev/null too): renaming over it would replace it, not write to it.
    # A pipe in a temporary directory is safe to lose if that regresses.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    before = os.stat(fifo)
    with pytest.raises(ValueError, match="not a regular file") as info:
        net.save(fifo)
    assert info.value.arg == "path"
    after = os.stat(fifo)
    assert stat.S_ISFIFO(after.st_mode) and after.st_ino == before.st_ino
    assert temporaries(tmp_path) == []


# -- files that are not kronnet files ----------------------------------------------


def check_refused(path, match):
    for loader in (kn.load, kn.Trainer.restore):
        with pytest.raises(kn.FileFormatError, match=match) as info:
            loader(path)
        assert info.value.path == str(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)
        # numpy's advice for files it takes for pickles must not reach the user.
        assert "pickle" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"hello, world\n",
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b"\x1f\x8b\x08\x00" + bytes(32),  # gzip
        b"\x80\x04\x95" + bytes(16),  # the start of a pickle
        bytes(range(256)),
        b"P",
    ],
    ids=["text", "png", "gzip", "pickle", "bytes", "one byte"],
)
def test_a_file_that_is_not_a_zip_is_refused_as_such(tmp_path, content):
    path = tmp_path / "model.kronnet"
    path.write_bytes(content)
    assert not zipfile.is_zipfile(path)
    check_refused(path, r"is not a kronnet file \(not a zip archive\)")


def test_an_empty_file_is_not_a_kronnet_file(tmp_path):
    path = tmp_path / "empty.kronnet"
    path.write_bytes(b"")
    check_refused(path, r"is not a kronnet file \(the file is empty\)")


def test_a_npy_file_is_still_named_as_such(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.ones(3))
    check_refused(path, "single .npy array")
    obj = tmp_path / "objects.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    check_refused(obj, "single .npy array")


def test_a_directory_is_not_read_as_a_file(tmp_path):
    with pytest.raises(IsADirectoryError):
        kn.load(tmp_path)


# -- kronnet.json ----------------------------------------------------------------------


def with_meta(src, dst, text):
    """The zip at src with its kronnet.json member replaced by `text`."""
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(text.encode(), dtype=np.uint8))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            raw = zin.read(info.filename)
            zout.writestr(info.filename, buf.getvalue() if info.filename == "kronnet.json.npy" else raw)


def meta_of(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(np.load(z.open("kronnet.json.npy")).tobytes())


@pytest.fixture
def files(tmp_path, net, trainer):
    net.save(tmp_path / "net.kronnet")
    trainer.checkpoint(tmp_path / "run.ckpt")
    return tmp_path


@pytest.mark.parametrize("depth", [100_000, 2_000, 40])
def test_a_deeply_nested_header_is_a_format_error(files, depth):
    for name in ("net.kronnet", "run.ckpt"):
        bad = files / f"deep-{name}"
        with_meta(files / name, bad, "[" * depth + "]" * depth)
        check_refused(bad, "kronnet.json nests arrays or objects too deeply")
        doc = meta_of(files / name)
        # Deep inside a header that is otherwise right: refused too.
        doc["extra"] = "NESTED"
        text = json.dumps(doc).replace('"NESTED"', '{"x": ' * depth + "1" + "}" * depth)
        with_meta(files / name, bad, text)
        check_refused(bad, "kronnet.json nests arrays or objects too deeply")


def test_the_depth_limit_leaves_room_for_real_headers(files):
    # An unknown field a few levels deep (a newer writer's, say) is read past.
    for name, loader in (("net.kronnet", kn.load), ("run.ckpt", kn.Trainer.restore)):
        doc = meta_of(files / name)
        doc["extra"] = {"a": [{"b": [[{"c": 1}]]}]}
        ok = files / f"extra-{name}"
        with_meta(files / name, ok, json.dumps(doc))
        assert loader(ok) is not None
    assert kn.Trainer.restore(files / "extra-run.ckpt").steps_done == 3


def test_an_integer_too_long_to_convert_is_a_format_error(files):
    doc = json.dumps(meta_of(files / "net.kronnet")).replace('"seed": 0', '"seed": ' + "9" * 50_000)
    assert "9" * 50_000 in doc
    bad = files / "long-int.kronnet"
    with_meta(files / "net.kronnet", bad, doc)
    check_refused(bad, "kronnet.json is not valid JSON")
