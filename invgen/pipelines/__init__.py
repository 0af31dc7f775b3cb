from invgen.pipelines.pixel_t2i import PixelTextToImagePipeline, build_pixel_pipeline

__all__ = ["PixelTextToImagePipeline", "build_pixel_pipeline"]
