import torch

from training.config import TrainConfig
from training.data import StepSampler, SyntheticTrainDataset, build_train_dataset
from training.image_pool import ImagePool
from training.synthetic import get_pair


def sampler(**kw: int) -> StepSampler:
    args = {"length": 10, "batch_size": 3, "seed": 1, "start_step": 0, "stop_step": 10}
    return StepSampler(**(args | kw))


def test_any_step_is_reproducible_without_replaying_earlier_ones() -> None:
    full = list(sampler())
    assert list(sampler(start_step=4)) == full[4:]


def test_each_epoch_visits_every_index_once_in_a_new_order() -> None:
    s = sampler(batch_size=5, stop_step=4)
    keys = [k for batch in s for k in batch]
    first, second = keys[:10], keys[10:]
    assert sorted(k % 10 for k in first) == list(range(10))
    assert sorted(k % 10 for k in second) == list(range(10))
    assert [k % 10 for k in first] != [k % 10 for k in second]
    assert all(k >= 10 for k in second)  # keys carry the epoch


def test_ranks_get_disjoint_samples() -> None:
    r0 = sampler(world_size=2, rank=0, length=12, batch_size=2, stop_step=3)
    r1 = sampler(world_size=2, rank=1, length=12, batch_size=2, stop_step=3)
    k0 = {k for b in r0 for k in b}
    k1 = {k for b in r1 for k in b}
    assert not k0 & k1 and len(k0 | k1) == 12


def test_synthetic_training_samples_are_pure_functions_of_the_key() -> None:
    ds = SyntheticTrainDataset(
        get_pair("day2night"), size=32, n=50, seed=0, flip=True, pairing="random"
    )
    a, b = ds[7], ds[7]
    assert torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])
    assert a["A"].shape == (3, 32, 32) and a["A"].min() >= -1 and a["A"].max() <= 1
    assert not torch.equal(ds[7]["B"], ds[57]["B"])  # next epoch pairs with another B


def test_build_train_dataset_uses_the_config() -> None:
    ds = build_train_dataset(TrainConfig(dataset="solid2stripes", size=32, n_train=5))
    assert len(ds) == 5  # type: ignore[arg-type]
    assert ds[0]["A"].shape == (3, 32, 32)


def test_image_pool_returns_mixes_and_restores_exactly() -> None:
    pool = ImagePool(4, seed=0)
    batches = [torch.full((2, 1, 2, 2), float(i)) for i in range(6)]
    for b in batches[:3]:
        out = pool.query(b)
        assert out.shape == b.shape
    state = pool.state_tensors("p")
    restored = ImagePool(4, seed=123)
    restored.load_state_tensors("p", state, torch.device("cpu"))
    for b in batches[3:]:
        assert torch.equal(pool.query(b), restored.query(b))
    seen = {float(v) for b in batches[3:] for v in pool.query(b).flatten()}
    assert seen - {3.0, 4.0, 5.0}  # old fakes come back


def test_empty_pool_passes_images_through() -> None:
    x = torch.randn(3, 3, 4, 4)
    assert ImagePool(0).query(x) is x
