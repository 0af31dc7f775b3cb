from invgen.data.digits import PALETTES, build_splits, digit_prompt, digit_prompts, make_colored_digits
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
    "PALETTES",
    "ImageRecord",
    "ImageSet",
    "build_splits",
    "digit_prompt",
    "digit_prompts",
    "make_colored_digits",
    "read_imagefolder",
    "read_metadata",
    "save_image",
    "write_imagefolder",
    "write_metadata",
]
