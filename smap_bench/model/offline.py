"""Offline scoring of test splits exactly as the live pipeline scores them.

Windows of ``window`` records every ``stride`` records from the split's first record
(:func:`smap_bench.windows.make_windows`), scored by the channel's exported ONNX graph,
decided by :func:`smap_bench.model.threshold.window_is_anomalous` (or by the stream rule
of :mod:`smap_bench.model.stream_rule`, alone or confirming it), and turned into record
flags by the responsibility rule of :func:`smap_bench.windows.record_flags_from_windows`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from smap_bench import windows
from smap_bench.model.stream_rule import StreamRule, confirmed_flags
from smap_bench.model.threshold import window_is_anomalous, window_statistic


def onnx_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session for one model file."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def score_split(
    session: ort.InferenceSession, split: np.ndarray, window: int, stride: int, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts ``[k]`` and per-record scores ``[k, window]`` of one split."""
    starts = windows.window_starts(len(split), window, stride)
    batches = windows.make_windows(split, window, stride)
    parts = [
        session.run(["score"], {"input": batches[i : i + batch]})[0]
        for i in range(0, len(batches), batch)
    ]
    scores = np.concatenate(parts) if parts else np.zeros((0, window), dtype=np.float32)
    return starts, scores


def split_flags(
    session: ort.InferenceSession,
    split: np.ndarray,
    threshold: float,
    window: int = 30,
    stride: int = 10,
    stream_rule: StreamRule | None = None,
    confirm: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-record flags ``[n]`` and the window statistic of each record's judging window
    ``[n]`` (the number compared with the threshold; NaN where no window judges).

    Windows are decided by the static rule (statistic above ``threshold``), or, given a
    ``stream_rule``, by that rule over the split's windows in order
    (:mod:`smap_bench.model.stream_rule`), or with ``confirm`` too, by the static rule
    confirmed by the stream rule."""
    starts, scores = score_split(session, split, window, stride)
    if stream_rule is None:
        flags = window_is_anomalous(scores, threshold)
    elif confirm:
        flags = confirmed_flags(window_statistic(scores), stream_rule)
    else:
        flags = stream_rule.flags(window_statistic(scores))
    record_flags = windows.record_flags_from_windows(flags, starts, len(split), window, stride)
    statistic = np.repeat(window_statistic(scores)[:, None], window, axis=1)
    record_statistic = windows.record_scores(statistic, starts, len(split), window, stride)
    return record_flags, record_statistic
