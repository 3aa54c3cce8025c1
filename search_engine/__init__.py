"""facesearch core: detect, align, embed, index and search faces.

Nothing here touches the web or the task queue; ``web`` and ``ingest`` build on it.
Importing this package is cheap: models and clients are built by factories.
"""

__version__ = "0.1.0"
