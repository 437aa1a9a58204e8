"""The package's ``__all__`` is exactly its public surface."""

from __future__ import annotations

import qlm.api.batch as batch


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(batch) if not n.startswith("_")}
    modules = {"config", "errors", "metrics", "records", "router", "runner", "schema", "store", "validation"}
    assert set(batch.__all__) == public - modules
    assert len(batch.__all__) == len(set(batch.__all__))
