def _per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """The inner product of a and b per sample (every dimension but the batch's),
    shaped to broadcast against them: [B, 1, ...]."""
    return torch.sum(a * b, dim=tuple(range(1, a.dim())), keepdim=True)


def _per_sample_norm(a: Tensor) -> Tensor:
    """The Euclidean norm of a per sample (every dimension but the batch's), shaped to
    broadcast against it: [B, 1, ...]. Its gradient at 0 is 0, not nan."""
    return torch.linalg.vector_norm(a, dim=tuple(range(1, a.dim())), keepdim=True)
