"""The package's public face: a sorted, importable ``__all__`` and private modules."""

from __future__ import annotations

import pkgutil

import costmeter


def test_all_is_sorted_and_importable() -> None:
    """``__all__`` is sorted, has no duplicates, and every name in it exists."""
    assert sorted(set(costmeter.__all__)) == costmeter.__all__
    assert [] == [name for name in costmeter.__all__ if not hasattr(costmeter, name)]


def test_only_documented_modules_are_public() -> None:
    """Modules are private (``_name``) except the CLI and the documented testing helpers."""
    public = {
        m.name for m in pkgutil.iter_modules(costmeter.__path__) if not m.name.startswith("_")
    }
    assert {"cli", "testing"} == public
