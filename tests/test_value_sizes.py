"""An equal value laid out differently in memory is the same stored value, size and all."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from nbflow.store.base import Store
from nbflow.values import encode


def test_an_equal_frame_with_another_layout_gets_the_stored_size(store: Store) -> None:
    frame = pd.DataFrame({"a": range(1000), "c": pd.Categorical(["x", "y"] * 500)})
    first = store.put_value(encode(frame, step="s"))
    # The same content from chunked Arrow data (as a frame read back from a store is).
    table = pa.Table.from_pandas(frame, preserve_index=False)
    rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=7)).to_pandas()
    again = encode(rechunked, step="t")
    assert again.ref.hash == first.hash
    assert again.ref.size != first.size  # the layouts differ
    second = store.put_value(again)
    assert second == first
    assert [b.size for b in store.list_blobs()] == [first.size]
    pd.testing.assert_frame_equal(store.load_value(second), frame)
