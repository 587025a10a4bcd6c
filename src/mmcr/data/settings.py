"""The settings of ``mmcr data shard`` (:func:`mmcr.data.shardwrite.write_shards`) as a section of
:mod:`mmcr.schema`, so the command takes ``--config``, ``--set``, ``--help-config`` and ``--print-config``
like every other."""

from __future__ import annotations

from mmcr.schema import AT_LEAST_1, SEED, option, section


@section
class ShardSettings:
    shard_size: int = option(1000, check=AT_LEAST_1, doc="samples per shard")
    seed: int = option(0, check=SEED, doc="seed of the shuffle before sharding")
