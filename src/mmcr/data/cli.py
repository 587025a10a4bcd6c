"""argparse wiring for ``mmcr data shard``: write an image folder as tar shards (webdataset layout)."""

from __future__ import annotations

from mmcr.data.settings import ShardSettings
from mmcr.schema import add_config_arguments, config_flag, config_from_args, print_config


def add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="prepare data sets (tar shards)", description="Prepare data sets.")
    tasks = p.add_subparsers(dest="data_command", required=True)
    s = tasks.add_parser(
        "shard",
        help="write an image folder as tar shards with a manifest",
        description="Write FOLDER (<class>/<image>, or train/ val/ test/ sub-folders of them) as tar shards "
                    "<split>-000000.tar ... in OUT_DIR, shuffled, plus manifest.json (classes, samples per shard "
                    "and class). Train on them with --set data.name=webdataset --set data.root=OUT_DIR.",
    )
    s.add_argument("folder", help="image folder: <class>/<image> or <split>/<class>/<image>")
    s.add_argument("out_dir", help="folder for the shards (new or empty)")
    add_config_arguments(s, ShardSettings, what="shard settings")
    config_flag(s, "--shard-size", "shard_size", ShardSettings, type=int)
    config_flag(s, "--seed", "seed", ShardSettings, type=int)
    s.set_defaults(func=_shard)


def _shard(args) -> int:
    from mmcr.data.shardwrite import write_shards

    settings = config_from_args(args, ShardSettings)
    if print_config(args, settings):
        return 0
    man = write_shards(args.folder, args.out_dir, shard_size=settings.shard_size, seed=settings.seed)
    for split, info in man["splits"].items():
        print(f"{split}: {info['count']} samples of {len(man['classes'])} classes in {len(info['shards'])} shard(s)")
    print(f"shards and manifest.json in {args.out_dir}")
    return 0
