"""__DESCRIPTION__"""

from __IMPORT__.__about__ import __version__

__all__ = ["__version__"]
