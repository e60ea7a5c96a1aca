def _take_indices(count: int, indices: int | list[int] | None) -> list[int]:
    """timm's `indices` over `count` stages: None every stage, an int n the
    last n, a list those (negative from the end); sorted."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"indices must lie in 1..{count}, got {indices}")
        return list(range(count - indices, count))
    taken = sorted({i % count if -count <= i < count else i for i in indices})
    if any(not 0 <= i < count for i in taken):
        raise ValueError(f"stage indices must lie in -{count}..{count - 1}, got {indices}")
    return taken
