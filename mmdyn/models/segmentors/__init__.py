from .dovit_segmentor import DoViTEncoderDecoder  # noqa: F401
