"""Image sets on disk (the `datasets` imagefolder layout) and the builders that write training sets."""

from invgen.data.imagefolder import (
    ImageRecord,
    ImageSet,
    read_imagefolder,
    read_metadata,
    save_image,
    write_imagefolder,
    write_metadata,
)

__all__ = [
    "ImageRecord",
    "ImageSet",
    "read_imagefolder",
    "read_metadata",
    "save_image",
    "write_imagefolder",
    "write_metadata",
]
