"""``rfad-train miniworld``: the miniature world's generator (tiny VAE, UNet, ControlNet, CLIP) trained on drawn scenes."""
