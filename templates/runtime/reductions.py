def _per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """The inner product of a and b per sample (every dimension but the batch's),
    shaped to broadcast against them: [B, 1, ...]. Summed in float32 at least: in
    float16 the sum overflows, and a floor such as 1e-12 is 0."""
    wide = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return torch.sum(a.to(wide) * b.to(wide), dim=tuple(range(1, a.dim())), keepdim=True)


def _per_sample_norm(a: Tensor) -> Tensor:
    """The Euclidean norm of a per sample (every dimension but the batch's), shaped to
    broadcast against it: [B, 1, ...], in float32 at least. Its gradient at 0 is 0,
    not nan."""
    wide = torch.promote_types(a.dtype, torch.float32)
    return torch.linalg.vector_norm(a.to(wide), dim=tuple(range(1, a.dim())), keepdim=True)
