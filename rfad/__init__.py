"""rfad: reliable e-commerce advertising image generation.

Importing :mod:`rfad` is cheap on purpose: the gRPC client (``rfad.client``) and the request
contract are used by ad systems that do not install torch or diffusers, so nothing heavy is
imported here.
"""

__version__ = "0.1.0"
