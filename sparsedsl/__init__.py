"""sparsedsl: a declarative language for graph-centric sparse computation."""
from sparsedsl.core.errors import SdslError

__all__ = ["SdslError"]
__version__ = "0.1.0"
