"""Core utilities shared by every layer: source spans, diagnostics, fresh names."""
