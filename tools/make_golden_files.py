"""Writes tests/data/golden: model files and checkpoints as this version of
kronnet writes them, with the predictions and continued losses they must
give, so later versions can check that every earlier format still loads and
predicts bitwise as before (tests/test_golden_files.py).

Run it only with the kronnet version whose files it should pin (it records
``kronnet_version``); the committed files were written by 0.1.0 at format
version 2 (and a version 1 copy derived from one of them).
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile

import kronnet as kn
import numpy as np


def rewrite_v1(src: str, dst: str) -> None:
    """A version-1 copy of a net file holding KronData blocks (no block_kinds)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            raw = zin.read(name)
            if name == "kronnet.json.npy":
                doc = json.loads(np.load(io.BytesIO(raw)).tobytes())
                doc["version"] = 1
                doc["net"].pop("block_kinds")
                doc["net"].pop("init", None)
                doc["net"].pop("init_rank", None)
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8))
                raw = buf.getvalue()
            zout.writestr(name, raw)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    expected = {}
    # 1. KronData, Gaussian init, two training sets (two blocks).
    data = kn.make_kronecker_data(48, dims=(4, 6), seed=3)
    extra = kn.make_kronecker_data(24, dims=(4, 6), seed=4)
    query = kn.make_kronecker_data(17, dims=(4, 6), seed=5)
    net = kn.TwoLayerNet(data.dims, width=192, seed=7)
    kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8, seed=1).fit(60)
    kn.Trainer(net, extra, lr=kn.suggest_lr(net, 4), batch_size=4, seed=2, index="tree").fit(30)
    net.save(os.path.join(out, "kron_gaussian.kronnet"))
    expected["kron_gaussian"] = net.predict(query)
    np.savez(os.path.join(out, "query_kron.npz"), *query.factors)
    rewrite_v1(os.path.join(out, "kron_gaussian.kronnet"), os.path.join(out, "kron_gaussian_v1.kronnet"))
    expected["kron_gaussian_v1"] = expected["kron_gaussian"]

    # 2. PairData, Kronecker-factored init.
    pairs = kn.make_pair_data(300, (20, 30), dims=(5, 7), seed=6)
    train, test = pairs.split("random_pair", seed=0)
    pnet = kn.TwoLayerNet(pairs.dims, width=128, seed=9, init="kron", init_rank=3)
    kn.Trainer(pnet, train, lr=kn.suggest_lr(pnet, 8), index="bits").fit(80)
    pnet.save(os.path.join(out, "pairs_kron_init.kronnet"))
    expected["pairs_kron_init"] = pnet.predict(test)
    np.save(os.path.join(out, "query_pairs.npy"), test.pairs)

    # 3. Points of three terms each, and a checkpoint of their trainer.
    rng = np.random.default_rng(11)
    factors = [rng.standard_normal((40, 3, 3)), rng.standard_normal((40, 3, 5))]
    y = rng.standard_normal(40)
    rdata = kn.KronData(factors, y).normalized()
    rnet = kn.TwoLayerNet(rdata.dims, width=96, seed=13)
    tr = kn.Trainer(rnet, rdata, lr=kn.suggest_lr(rnet, 5), batch_size=5, seed=3, gram="columns")
    tr.fit(25)
    tr.checkpoint(os.path.join(out, "rank3.ckpt"))
    expected["rank3_checkpoint_losses"] = tr.fit(20).loss
    expected["rank3_after"] = rnet.predict(rdata)

    # 4. A dense-backend checkpoint.
    dnet = kn.TwoLayerNet(data.dims, width=64, seed=17)
    dtr = kn.Trainer(dnet, data, lr=kn.suggest_lr(dnet, 8), backend="dense")
    dtr.fit(15)
    dtr.checkpoint(os.path.join(out, "dense.ckpt"))
    expected["dense_checkpoint_losses"] = dtr.fit(10).loss
    expected["dense_after"] = dnet.predict(query)

    np.savez(os.path.join(out, "expected.npz"), **expected)
    print("kronnet", kn.__version__, "wrote", sorted(os.listdir(out)))


def sharded(out: str) -> None:
    """Under ``mpiexec -n 2``: a net and a checkpoint written by a sharded
    trainer (alpha in C order, streamed by rank 0)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    data = kn.make_kronecker_data(40, dims=(3, 5), seed=21)
    net = kn.TwoLayerNet(data.dims, width=256, seed=23)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), comm=comm)
    tr.fit(30)
    net.save(os.path.join(out, "sharded.kronnet"))
    tr.checkpoint(os.path.join(out, "sharded.ckpt"))
    losses = tr.fit(10).loss
    pred = net.predict(data)
    if comm.rank == 0:
        np.savez(os.path.join(out, "expected_sharded.npz"), losses=losses, after=pred)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--sharded"]
    where = args[0] if args else os.path.join("tests", "data", "golden")
    if "--sharded" in sys.argv:
        sharded(where)
    else:
        main(where)
