"""SMAP data access: the telemanom-layout loader, the offline synthetic source, the download.

See :mod:`smap_bench.data.loader` for where the dataset is looked for.
"""

from smap_bench.data.loader import (
    ChannelData,
    DataError,
    DataSource,
    LabeledRange,
    list_channels,
    load_all,
    load_channel,
    load_labels,
    resolve_data_dir,
)
from smap_bench.data.synthetic import generate_channel, generate_dataset, write_synthetic_dataset

__all__ = [
    "ChannelData",
    "DataError",
    "DataSource",
    "LabeledRange",
    "generate_channel",
    "generate_dataset",
    "list_channels",
    "load_all",
    "load_channel",
    "load_labels",
    "resolve_data_dir",
    "write_synthetic_dataset",
]
