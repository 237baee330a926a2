"""Tensor IR: typed index-notation statements with explicit reductions, masks and presence (spec § 5)."""
