"""Bundled real sparse matrices (Matrix Market, gzip) and the demo program; see README.md here for origins."""
