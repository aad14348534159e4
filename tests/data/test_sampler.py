"""DP-sharded sampler: shares, determinism, mid-epoch save/restore, incomplete batches."""

import pytest

from nemo_repo.data.sampler import PreferenceSampler


def take(sampler, steps):
    return [sampler.next_step() for _ in range(steps)]


def test_ranks_partition_every_global_batch():
    G, dp = 12, 3
    samplers = [PreferenceSampler(50, G, 2, rank, dp, seed=5) for rank in range(dp)]
    reference = PreferenceSampler(50, G, 2, 0, 1, seed=5)
    for _ in range(2 * reference.steps_per_epoch):     # two epochs
        plans = [s.next_step() for s in samplers]
        whole = reference.next_step()
        joined = [i for plan in plans for mb in plan.micro_batches for i in mb]
        assert joined == [i for mb in whole.micro_batches for i in mb]
        assert all(len(plan.micro_batches) == 2 and all(len(mb) == 2 for mb in plan.micro_batches)
                   for plan in plans)
    assert reference.epoch == 2


def test_epochs_differ_and_cover_the_data_once():
    sampler = PreferenceSampler(40, 8, 4, seed=1)
    epochs = [[i for plan in take(sampler, 5) for mb in plan.micro_batches for i in mb] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(40))
    assert epochs[0] != epochs[1]
    assert PreferenceSampler(40, 8, 4, seed=1).global_batch(1, 0).tolist() == epochs[1][:8]


@pytest.mark.parametrize("dp_rank", [0, 1])
def test_restore_mid_epoch_reproduces_the_remaining_order(dp_rank):
    make = lambda: PreferenceSampler(37, 8, 2, dp_rank, 2, seed=9)  # noqa: E731
    uninterrupted = make()
    full = take(uninterrupted, 11)                      # crosses the epoch boundary (4 steps/epoch)
    first = make()
    take(first, 6)
    state = first.state_dict()
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)
    resumed = make()
    resumed.load_state_dict(state)
    assert take(resumed, 5) == full[6:]


def test_state_from_another_dp_layout_continues_the_same_global_batches():
    single = PreferenceSampler(30, 6, 3, 0, 1, seed=2)
    take(single, 3)
    state = single.state_dict()
    rest = [i for plan in take(single, 4) for mb in plan.micro_batches for i in mb]
    ranks = []
    for rank in range(2):
        sampler = PreferenceSampler(30, 6, 3, rank, 2, seed=2)
        sampler.load_state_dict(state)
        ranks.append(take(sampler, 4))
    merged = [i for step in zip(*ranks) for plan in step for mb in plan.micro_batches for i in mb]
    assert merged == rest


def test_incomplete_last_batch_drop_and_wrap_are_reported():
    drop = PreferenceSampler(21, 8, 4, seed=0, incomplete="drop")
    assert drop.steps_per_epoch == 2
    assert drop.epoch_summary()["dropped_per_epoch"] == 5
    plans = take(drop, 2)
    assert plans[-1].last_in_epoch and not plans[0].last_in_epoch and drop.epoch == 1
    wrap = PreferenceSampler(21, 8, 4, seed=0, incomplete="wrap")
    assert wrap.steps_per_epoch == 3 and wrap.epoch_summary()["repeated_per_epoch"] == 3
    seen = [i for plan in take(wrap, 3) for mb in plan.micro_batches for i in mb]
    assert len(seen) == 24 and set(seen) == set(range(21))


def test_bad_settings_and_mismatched_state_raise():
    with pytest.raises(ValueError, match="not divisible"):
        PreferenceSampler(100, 10, 4, 0, 2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        PreferenceSampler(5, 8, 4)
    state = PreferenceSampler(40, 8, 4, seed=1).state_dict()
    with pytest.raises(ValueError, match="num_pairs"):
        PreferenceSampler(41, 8, 4, seed=1).load_state_dict(state)
