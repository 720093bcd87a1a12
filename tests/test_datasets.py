"""Tests for torchx.datasets: the IDX reader, the MNIST and digits data modules and EpochSampler.

MNIST is faked with tiny IDX files written into tmp_path; the real files are only read by the
`slow` test, when the shared data folder exists.
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import pytest
import torch

import torchx.datasets as datasets
from helpers import SHARED_MNIST, idx_bytes
from helpers import write_idx as write_idx_file
from torchx.datasets.base import BatchTensorDataset, EpochSampler
from torchx.datasets.mnist import FILES, MNIST, read_idx
from torchx.errors import ConfigError

REAL_MNIST = SHARED_MNIST
MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

N_TRAIN, N_TEST = 100, 20


# ---------------------------------------------------------------- helpers


def write_idx(path: Path, array: torch.Tensor, gz: bool = False) -> Path:
    return write_idx_file(path.with_name(path.name + ".gz") if gz else path, array)


def fake_images(n: int, seed: int) -> torch.Tensor:
    """Random uint8 images [n, 28, 28] with pixel (0, 0) = 0, pixel (0, 1) = 255 and the image's
    index in its last pixel, so tests can identify an image after shuffling and normalising."""
    images = torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    images[:, 0, 0] = 0
    images[:, 0, 1] = 255
    images[:, -1, -1] = torch.arange(n, dtype=torch.uint8)
    return images


def fake_labels(n: int) -> torch.Tensor:
    return (torch.arange(n) % 10).to(torch.uint8)


def write_fake_mnist(folder: Path, gz: bool = False, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    write_idx(folder / "train-images-idx3-ubyte", fake_images(n_train, seed=1), gz)
    write_idx(folder / "train-labels-idx1-ubyte", fake_labels(n_train), gz)
    write_idx(folder / "t10k-images-idx3-ubyte", fake_images(n_test, seed=2), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", fake_labels(n_test), gz)
    return folder


def image_ids(x: torch.Tensor, dm) -> list[int]:
    """Recover the index stored in the last pixel of each normalised image of a batch."""
    raw = (x[:, 0, -1, -1] * dm.std + dm.mean) * 255
    return raw.round().long().tolist()


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return write_fake_mnist(tmp_path / "mnist")


def make_mnist(root: Path, **kwargs) -> MNIST:
    return datasets.make({"name": "mnist", "args": {"root_dir": str(root), "batch_size": 16,
                                                    "val_split": 10, **kwargs}})


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("shape", [(7,), (5, 4, 3), (2, 3)])
def test_read_idx_round_trip(tmp_path, gz, shape):
    array = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path = write_idx(tmp_path / "data-idx", array, gz)
    back = read_idx(path)
    assert back.dtype == torch.uint8
    assert back.shape == shape
    assert torch.equal(back, array)


def test_read_idx_big_endian_sizes(tmp_path):
    # a dimension > 255 needs more than the low byte of its big-endian uint32
    array = torch.arange(300 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(300, 2)
    assert torch.equal(read_idx(write_idx(tmp_path / "big", array)), array)


def _write_raw(tmp_path: Path, data: bytes, gz: bool) -> Path:
    path = tmp_path / ("bad.gz" if gz else "bad")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


GOOD = idx_bytes(torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("data", [b"\x01\x00" + GOOD[2:], b"\x00\x07" + GOOD[2:], b"\x00\x00", b""],
                         ids=["first-byte", "second-byte", "too-short", "empty"])
def test_read_idx_bad_magic(tmp_path, gz, data):
    path = _write_raw(tmp_path, data, gz)
    with pytest.raises(ConfigError, match=re.escape(f"{path} is not an IDX file (bad magic number)")):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("type_byte", [0x09, 0x0B, 0x0D, 0x0E])
def test_read_idx_rejects_non_uint8_data_type(tmp_path, gz, type_byte):
    path = _write_raw(tmp_path, GOOD[:2] + bytes([type_byte]) + GOOD[3:], gz)
    with pytest.raises(ConfigError, match=re.escape(f"IDX data type 0x{type_byte:02x} is not unsigned byte (0x08)")):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("data, n_bytes", [(GOOD[:-1], len(GOOD) - 1), (GOOD + b"\x00", len(GOOD) + 1),
                                           (GOOD[:10], 10)], ids=["data-cut", "extra-byte", "header-cut"])
def test_read_idx_size_mismatch(tmp_path, gz, data, n_bytes):
    path = _write_raw(tmp_path, data, gz)
    with pytest.raises(ConfigError, match=rf"but the file has {n_bytes} bytes; it is truncated or corrupt"):
        read_idx(path)


def test_read_idx_size_mismatch_reports_expected_shape(tmp_path):
    path = _write_raw(tmp_path, GOOD[:-1], gz=False)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: header says shape [2, 3, 4] ({len(GOOD)} bytes)")):
        read_idx(path)


def test_read_idx_truncated_gzip_file(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(GOOD)[:-8])  # a partial copy/download of a .gz file
    with pytest.raises(ConfigError, match=r"truncated or corrupt"):
        read_idx(path)


def test_read_idx_zero_items(tmp_path):
    path = write_idx(tmp_path / "empty", torch.zeros(0, 28, 28, dtype=torch.uint8))
    assert read_idx(path).shape == (0, 28, 28)


# ---------------------------------------------------------------- MNIST data module on fake files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("layout", [".", "MNIST/raw"])
def test_mnist_loads_both_layouts(tmp_path, layout, gz):
    write_fake_mnist(tmp_path / "root" / layout, gz=gz)
    dm = make_mnist(tmp_path / "root", val_split=0)
    assert dm.missing() == []
    dm.setup()
    images, labels = dm.splits["train"]
    assert images.shape == (N_TRAIN, 1, 28, 28)
    assert sorted(images[:, 0, -1, -1].tolist()) == list(range(N_TRAIN))
    assert torch.equal(dm.splits["test"][0][:, 0], fake_images(N_TEST, seed=2))
    assert torch.equal(dm.splits["test"][1], fake_labels(N_TEST).long())


def test_mnist_is_registered():
    assert "mnist" in datasets.registry
    assert datasets.registry.get("mnist") is MNIST


def test_mnist_dataloader_batches(mnist_root):
    dm = make_mnist(mnist_root, eval_batch_size=8)
    dm.setup()
    for loader, batch_size, n in [(dm.train_dataloader(), 16, N_TRAIN - 10),
                                  (dm.val_dataloader(), 8, 10),
                                  (dm.test_dataloader(), 8, N_TEST)]:
        batches = list(loader)
        assert len(batches) == len(loader) == math.ceil(n / batch_size)
        x, y = batches[0]
        assert x.shape == (batch_size, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (batch_size,) and y.dtype == torch.int64
        assert sum(len(b[1]) for b in batches) == n


def test_mnist_train_loader_yields_every_training_image_once(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    ids = [i for x, _ in dm.train_dataloader() for i in image_ids(x, dm)]
    expected = sorted(dm.splits["train"][0][:, 0, -1, -1].tolist())
    assert sorted(ids) == expected
    assert len(set(ids)) == N_TRAIN - 10


def test_mnist_labels_follow_their_images(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    for x, y in dm.train_dataloader():
        assert [i % 10 for i in image_ids(x, dm)] == y.tolist()


@pytest.mark.parametrize("val_split, n_val", [(10, 10), (1, 1), (37, 37), (0.25, 25), (0.1, 10), (0.5, 50),
                                              (0.004, 0), (0, 0)])
def test_mnist_val_split_sizes(mnist_root, val_split, n_val):
    dm = make_mnist(mnist_root, val_split=val_split)
    dm.setup()
    assert len(dm.splits["train"][1]) == N_TRAIN - n_val
    if n_val:
        assert len(dm.splits["val"][1]) == n_val
        ids = dm.splits["train"][0][:, 0, -1, -1].tolist() + dm.splits["val"][0][:, 0, -1, -1].tolist()
        assert sorted(ids) == list(range(N_TRAIN))  # train and val partition the training file
    else:
        assert not dm.has_split("val")
        assert dm.val_dataloader() == []
    assert len(dm.splits["test"][1]) == N_TEST


def test_mnist_default_val_split_is_5000():
    assert MNIST().val_split == 5000


def test_mnist_val_split_is_fixed_by_split_seed(mnist_root):
    def val_ids(**kw):
        dm = make_mnist(mnist_root, **kw)
        dm.setup()
        return dm.splits["val"][0][:, 0, -1, -1].tolist()

    torch.manual_seed(123)
    first = val_ids()
    torch.manual_seed(456)
    assert val_ids() == first  # the global RNG plays no part
    assert val_ids(split_seed=1) != first


@pytest.mark.parametrize("val_split", [N_TRAIN, N_TRAIN + 1, 0.9999])
def test_mnist_val_split_leaving_no_training_data(mnist_root, val_split):
    dm = make_mnist(mnist_root, val_split=val_split)
    with pytest.raises(ConfigError, match=re.escape(f"val_split={val_split} leaves no training data "
                                                    f"({N_TRAIN} training samples)")):
        dm.setup()


@pytest.mark.parametrize("val_split", [-1, -0.5, "10", None])
def test_invalid_val_split_is_rejected(val_split):
    with pytest.raises(ConfigError, match=r"val_split must be a count \(>= 1\) or a fraction in \[0, 1\)"):
        MNIST(val_split=val_split)


@pytest.mark.parametrize("arg, value, message", [
    ("batch_size", 0, "batch_size must be a positive integer, got 0"),
    ("batch_size", 2.0, "batch_size must be a positive integer, got 2.0"),
    ("num_workers", -1, "num_workers must be a non-negative integer, got -1"),
])
def test_invalid_loader_arguments_are_rejected(arg, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MNIST(**{arg: value})


def test_mnist_normalisation(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    mean, std = MNIST.mean, MNIST.std
    assert (mean, std) == (0.1307, 0.3081)
    torch.testing.assert_close(x[:, 0, 0, 0], torch.full((16,), -mean / std))
    torch.testing.assert_close(x[:, 0, 0, 1], torch.full((16,), (1 - mean) / std))
    ids = image_ids(x, dm)
    raw = dm.splits["train"][0]
    by_id = {int(raw[i, 0, -1, -1]): raw[i] for i in range(len(raw))}
    expected = torch.stack([by_id[i] for i in ids]).float().div(255).sub(mean).div(std)
    torch.testing.assert_close(x, expected)


def test_mnist_images_stay_uint8_in_memory(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    for split in ("train", "val", "test"):
        images, labels = dm.splits[split]
        assert images.dtype == torch.uint8
        assert labels.dtype == torch.int64
    assert dm.splits["train"][0].dtype == torch.uint8
    next(iter(dm.train_dataloader()))
    assert dm.splits["train"][0].dtype == torch.uint8  # normalising a batch does not touch the store


def test_setup_is_idempotent(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    train = dm.splits["train"][0]
    dm.setup("fit")
    assert dm.splits["train"][0] is train


def test_train_dataloader_sets_up_on_demand(mnist_root):
    dm = make_mnist(mnist_root)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 28, 28) and y.shape == (16,)


def test_mnist_mismatched_image_and_label_counts(tmp_path):
    root = write_fake_mnist(tmp_path)
    write_idx(root / "train-labels-idx1-ubyte", fake_labels(N_TRAIN - 1))
    with pytest.raises(ConfigError, match=re.escape("MNIST train files in") + r".*"
                       + re.escape(f"disagree: images [{N_TRAIN}, 28, 28], labels [{N_TRAIN - 1}]")):
        make_mnist(root).setup()


# ---------------------------------------------------------------- missing files


def test_mnist_missing_files_without_download(tmp_path):
    root = tmp_path / "partial"
    write_idx(root / "train-images-idx3-ubyte", fake_images(4, seed=0))
    write_idx(root / "t10k-labels-idx1-ubyte", fake_labels(4), gz=True)
    dm = make_mnist(root, download=False)
    assert dm.missing() == ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
    dm.prepare_data()  # nothing to do without download
    with pytest.raises(ConfigError) as info:
        dm.setup()
    message = str(info.value)
    assert f"MNIST files missing in '{root}': train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz" in message
    assert "train-images" not in message and "t10k-labels" not in message
    assert "download=true" in message


def test_mnist_empty_folder_names_all_four_files(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"MNIST files missing in '{tmp_path}': ") + ".*download"):
        make_mnist(tmp_path).setup()
    assert make_mnist(tmp_path).missing() == list(FILES)


def test_mnist_missing_folder(tmp_path):
    root = tmp_path / "does-not-exist"
    with pytest.raises(ConfigError, match=re.escape(f"'{root}'") + r".*data_module\.args\.download=true"):
        make_mnist(root).setup()


# ---------------------------------------------------------------- EpochSampler


def batches(sampler: EpochSampler) -> list[list[int]]:
    return [key.indices for key in sampler]


def test_sampler_same_seed_and_epoch_same_order():
    a = EpochSampler(50, 8, shuffle=True, seed=3)
    b = EpochSampler(50, 8, shuffle=True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert batches(a) == batches(b)
    assert batches(a) == batches(a)  # iterating again in the same epoch repeats it


def test_sampler_different_epochs_and_seeds_differ():
    orders = []
    for seed, epoch in [(3, 0), (3, 1), (3, 2), (4, 0)]:
        s = EpochSampler(50, 8, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        orders.append(batches(s))
    assert len({str(o) for o in orders}) == len(orders)


def test_sampler_set_epoch_changes_the_order():
    s = EpochSampler(50, 8, shuffle=True, seed=0)
    first = batches(s)
    s.set_epoch(1)
    second = batches(s)
    assert first != second
    assert sorted(sum(first, [])) == sorted(sum(second, []))
    s.set_epoch(0)
    assert batches(s) == first


def test_sampler_does_not_depend_on_global_rng():
    s = EpochSampler(50, 8, shuffle=True, seed=5)
    torch.manual_seed(0)
    first = batches(s)
    torch.manual_seed(99)
    torch.rand(10)
    assert batches(s) == first


@pytest.mark.parametrize("n, batch_size", [(50, 8), (48, 8), (7, 10), (1, 1)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_every_index_once_per_epoch(n, batch_size, shuffle):
    s = EpochSampler(n, batch_size, shuffle=shuffle, seed=0)
    for epoch in range(3):
        s.set_epoch(epoch)
        out = batches(s)
        flat = sum(out, [])
        assert sorted(flat) == list(range(n))
        assert all(len(b) == batch_size for b in out[:-1])
        if not shuffle:
            assert flat == list(range(n))


def test_sampler_shuffles():
    assert sum(batches(EpochSampler(50, 50, shuffle=True, seed=0)), []) != list(range(50))


@pytest.mark.parametrize("n, batch_size", [(50, 8), (51, 8), (16, 4), (5, 2)])
def test_sampler_two_ranks_are_disjoint_and_cover_everything(n, batch_size):
    ranks = [EpochSampler(n, batch_size, shuffle=True, seed=7, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    out = [batches(s) for s in ranks]
    assert len(out[0]) == len(out[1]) == len(ranks[0])  # every rank runs the same number of steps
    flat = [sum(o, []) for o in out]
    pad = 2 * math.ceil(n / 2) - n
    assert len(flat[0]) == len(flat[1]) == math.ceil(n / 2)
    assert set(flat[0]) | set(flat[1]) == set(range(n))
    # only the padding (indices repeated to even out the ranks) may appear on both
    assert len(set(flat[0]) & set(flat[1])) == pad
    assert len(set(flat[0])) == len(flat[0]) and len(set(flat[1])) == len(flat[1])


@pytest.mark.parametrize("n, batch_size", [(50, 8), (51, 8), (16, 4), (5, 2)])
def test_sampler_two_ranks_drop_last_drops_only_the_tail(n, batch_size):
    for rank in range(2):
        full = sum(batches(EpochSampler(n, batch_size, shuffle=True, seed=7, rank=rank, world_size=2)), [])
        dropped = batches(EpochSampler(n, batch_size, shuffle=True, seed=7, drop_last=True, rank=rank,
                                       world_size=2))
        assert all(len(b) == batch_size for b in dropped)
        assert sum(dropped, []) == full[:len(dropped) * batch_size]
        assert len(full) - len(dropped) * batch_size < batch_size


def test_sampler_two_ranks_without_padding_are_disjoint():
    ranks = [EpochSampler(40, 6, shuffle=True, seed=1, rank=r, world_size=2) for r in range(2)]
    a, b = (sum(batches(s), []) for s in ranks)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(40))


@pytest.mark.parametrize("n, batch_size, world_size", [(50, 8, 1), (48, 8, 1), (3, 8, 1), (50, 8, 2),
                                                       (51, 5, 2), (100, 7, 3), (10, 10, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_len_matches_yielded_batches(n, batch_size, world_size, drop_last):
    for rank in range(world_size):
        s = EpochSampler(n, batch_size, shuffle=True, seed=0, drop_last=drop_last, rank=rank, world_size=world_size)
        out = batches(s)
        assert len(s) == len(out)
        per_rank = math.ceil(n / world_size)
        expected = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
        assert len(s) == expected
        if drop_last:
            assert all(len(b) == batch_size for b in out)
        else:
            assert sum(len(b) for b in out) == per_rank


# ---------------------------------------------------------------- loader order vs the global RNG


def _train_ids(root: Path, seed: int, consume: int) -> list[list[int]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.rand(consume)  # draws from the global RNG before the loader exists
        dm = make_mnist(root)
        dm.setup()
        loader = dm.train_dataloader()
        torch.rand(consume)  # ...and between creating and iterating it
        return [image_ids(x, dm) for x, _ in loader]


def test_train_loader_order_ignores_global_rng_state(mnist_root):
    reference = _train_ids(mnist_root, seed=1, consume=0)
    assert _train_ids(mnist_root, seed=1, consume=1000) == reference
    assert _train_ids(mnist_root, seed=1, consume=7) == reference
    assert _train_ids(mnist_root, seed=2, consume=0) != reference  # but the run's seed does matter


def test_train_loader_iteration_does_not_consume_global_rng(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    loader = dm.train_dataloader()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        list(loader)
        after = torch.rand(3)
        torch.manual_seed(0)
        assert torch.equal(torch.rand(3), after)


def test_train_loader_reshuffles_each_epoch(mnist_root):
    dm = make_mnist(mnist_root)
    dm.setup()
    loader = dm.train_dataloader()
    first = [image_ids(x, dm) for x, _ in loader]
    loader.sampler.set_epoch(1)
    second = [image_ids(x, dm) for x, _ in loader]
    assert first != second
    assert sorted(sum(first, [])) == sorted(sum(second, []))


def test_eval_loaders_do_not_shuffle(mnist_root):
    dm = make_mnist(mnist_root, eval_batch_size=N_TEST)
    dm.setup()
    (x, y), = list(dm.test_dataloader())
    assert image_ids(x, dm) == list(range(N_TEST))
    assert y.tolist() == fake_labels(N_TEST).tolist()


def test_batch_tensor_dataset_indexes_whole_batches():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(3, 1, 1, 1)
    ds = BatchTensorDataset(images, torch.tensor([7, 8, 9]), mean=0.5, std=0.25)
    assert len(ds) == 3
    x, y = ds[[2, 0]]
    torch.testing.assert_close(x.flatten(), torch.tensor([2.0, -2.0]))
    assert y.tolist() == [9, 7]


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    dm = datasets.make({"name": "digits", "args": {"batch_size": 32}})
    dm.setup()
    return dm


def test_digits_sizes(digits):
    sizes = {k: len(v[1]) for k, v in digits.splits.items()}
    assert sizes == {"train": 1350, "val": 150, "test": 297}
    assert sum(sizes.values()) == 1797


def test_digits_custom_test_split():
    dm = datasets.make({"name": "digits", "args": {"test_split": 97, "val_split": 0}})
    dm.setup()
    assert len(dm.splits["train"][1]) == 1700 and len(dm.splits["test"][1]) == 97


def test_digits_storage_and_value_range(digits):
    for images, labels in digits.splits.values():
        assert images.dtype == torch.uint8
        assert images.shape[1:] == (1, 8, 8)
        assert labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() <= 9
    everything = torch.cat([v[0] for v in digits.splits.values()])
    assert everything.min() == 0 and everything.max() == 255  # 0..16 scaled to 0..255
    assert set(torch.cat([v[1] for v in digits.splits.values()]).tolist()) == set(range(10))


def test_digits_batch(digits):
    x, y = next(iter(digits.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    lo, hi = (0 - digits.mean) / digits.std, (1 - digits.mean) / digits.std
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5


# ---------------------------------------------------------------- real MNIST


@pytest.mark.slow
@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST not found at {REAL_MNIST}")
def test_real_mnist():
    dm = datasets.make({"name": "mnist", "args": {"root_dir": str(REAL_MNIST), "batch_size": 256}})
    dm.setup()
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert dm.splits["train"][0].shape == (55000, 1, 28, 28)
    assert dm.splits["train"][0].dtype == torch.uint8
    # the training file's label counts: train + val together are the 60000 training images
    all_train = torch.cat([dm.splits["train"][1], dm.splits["val"][1]])
    assert torch.bincount(all_train, minlength=10).tolist() == MNIST_TRAIN_LABEL_COUNTS
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (256, 1, 28, 28) and y.shape == (256,)
    assert abs(dm.splits["train"][0].float().mean().item() / 255 - MNIST.mean) < 0.002


def test_download_fetches_missing_files_and_checks_md5(tmp_path, monkeypatch):
    """The real download code, against a local file:// mirror (no network needed)."""
    import hashlib

    import torchx.datasets.mnist as mnist_module
    from helpers import write_fake_mnist as write_mirror

    mirror = write_mirror(tmp_path / "mirror", n_train=30, n_test=10)
    md5 = {stem: hashlib.md5((mirror / f"{stem}.gz").read_bytes()).hexdigest() for stem in FILES}
    monkeypatch.setattr(mnist_module, "FILES", {s: (FILES[s][0], md5[s]) for s in FILES})
    monkeypatch.setattr(mnist_module, "MIRRORS", (mirror.as_uri() + "/",))
    dm = MNIST(root_dir=str(tmp_path / "data"), download=True, val_split=5)
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(f"{s}.gz" for s in FILES)
    dm.setup()
    assert len(dm.splits["train"][1]) == 25 and len(dm.splits["test"][1]) == 10

    bad = {s: (FILES[s][0], "0" * 32) for s in FILES}
    monkeypatch.setattr(mnist_module, "FILES", bad)
    with pytest.raises(ConfigError, match="could not download train-images-idx3-ubyte.gz: .*md5 mismatch"):
        MNIST(root_dir=str(tmp_path / "other"), download=True).prepare_data()
    assert not list((tmp_path / "other").glob("*.gz"))  # nothing half-written is left behind
