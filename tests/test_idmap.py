"""Id maps: choosing, validating and showing a domain's block of host ids (pure), and
the config's `privileged` and `[idmap]` (pure)."""

import errno

import pytest

from vzfs.base.errors import VzfsError
from vzfs.model import config as configmod
from vzfs.model import idmap
from vzfs.model.idmap import BLOCK, FIRST, IdMap


def test_pick_takes_the_first_free_block_of_vzfs_range() -> None:
    assert idmap.pick([], (), ()) == IdMap(FIRST, FIRST, BLOCK)
    assert FIRST == 524288
    taken = [IdMap(FIRST, FIRST), IdMap(FIRST + 2 * BLOCK, FIRST + 2 * BLOCK)]
    assert idmap.pick(taken, (), ()) == IdMap(FIRST + BLOCK, FIRST + BLOCK)


def test_pick_uses_roots_subuid_range_aligned() -> None:
    subuid = idmap.parse_subid("alice:100000:65536\nroot:100000:1000000\n# x\n0:5:5\n")
    assert subuid == ((100000, 1000000), (5, 5))
    got = idmap.pick([], subuid, subuid)
    # 100000 rounded up to a multiple of 65536
    assert got == IdMap(131072, 131072, BLOCK)
    assert idmap.inside(got, subuid, subuid)


def test_pick_never_overlaps_a_partly_taken_block() -> None:
    taken = [IdMap(FIRST + 10, FIRST + 10)]        # a hand-made map, not aligned
    got = idmap.pick(taken, (), ())
    assert not got.overlaps(taken[0])
    assert got.uid == FIRST + 2 * BLOCK     # it reaches 10 ids into the second block


def test_pick_gids_where_the_uid_base_is_taken_for_groups() -> None:
    taken = [IdMap(FIRST + 5 * BLOCK, FIRST)]
    got = idmap.pick(taken, (), ())
    assert got.uid == FIRST and got.gid == FIRST + BLOCK
    assert not got.overlaps(taken[0])


def test_pick_says_when_the_range_is_full() -> None:
    ranges = ((FIRST, BLOCK),)
    with pytest.raises(VzfsError) as info:
        idmap.pick([IdMap(FIRST, FIRST)], ranges, ranges)
    assert info.value.errno == errno.EEXIST
    assert "subuid" in info.value.sentence


@pytest.mark.parametrize("m, why", [
    (IdMap(FIRST, FIRST, 1000), "multiple of 65536"),
    (IdMap(FIRST, FIRST, 3 * BLOCK // 2), "multiple of 65536"),
    (IdMap(0, FIRST), "host's root"),
    (IdMap(FIRST, 0), "host's root"),
    (IdMap(2**32 - BLOCK, FIRST), "passes the last id"),
])
def test_validate_refuses(m: IdMap, why: str) -> None:
    with pytest.raises(VzfsError) as info:
        idmap.validate(m)
    assert info.value.errno == errno.EINVAL
    assert why in info.value.sentence


def test_check_free_names_the_holder() -> None:
    with pytest.raises(VzfsError) as info:
        idmap.check_free("b", IdMap(FIRST + 100, FIRST + BLOCK * 3),
                         {"a": IdMap(FIRST, FIRST), "b": IdMap(FIRST, FIRST)})
    assert info.value.errno == errno.EEXIST
    assert "domain a" in info.value.sentence
    idmap.check_free("b", IdMap(FIRST + BLOCK, FIRST + BLOCK), {"a": IdMap(FIRST, FIRST)})


def test_shown_as_the_kernel_shows_uid_map() -> None:
    assert IdMap(524288, 524288).shown() == "         0     524288      65536\n"
    assert IdMap(524288, 589824).shown().splitlines()[1].split() == ["0", "589824", "65536"]
    assert IdMap(524288, 524288).lines("gid") == "0 524288 65536\n"


def test_config_privileged_and_idmap_round_trip() -> None:
    cfg = configmod.parse('privileged = false\n[idmap]\nuid = 655360\nsize = 131072\n',
                          name="web1", default_id=101)
    assert not cfg.privileged
    assert cfg.idmap == IdMap(655360, 655360, 131072)
    again = configmod.parse(configmod.dumps(cfg), name="web1", default_id=None)
    assert again == cfg
    assert configmod.default("web1", 101).privileged is False
    assert configmod.parse("privileged = true\n", name="w", default_id=1).privileged
    # Turning privilege on keeps the block, for the day it is turned off again.
    kept = configmod.parse("privileged = true\n[idmap]\nuid = 655360\n", name="w", default_id=1)
    assert kept.privileged and kept.idmap == IdMap(655360, 655360)


@pytest.mark.parametrize("text, key", [
    ("[idmap]\ngid = 655360\n", "idmap.uid"),
    ("[idmap]\nuid = 655360\nsize = 1000\n", "idmap.size"),
    ("[idmap]\nuid = 655360\nextra = 1\n", "idmap.extra"),
    ('privileged = "yes"\n', "privileged"),
])
def test_config_refuses_bad_idmaps(text: str, key: str) -> None:
    with pytest.raises(VzfsError) as info:
        configmod.parse(text, name="w", default_id=1)
    assert info.value.errno == errno.EINVAL
    assert info.value.sentence.startswith(key)
