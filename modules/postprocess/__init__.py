"""Image services besides the denoising engine: upscalers, face restoration, the NSFW checker,
the invisible watermark, and the Extras tab's pipeline. `services.Postprocessors` holds them."""
