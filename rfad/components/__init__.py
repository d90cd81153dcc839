"""Component declarations shared by export, serving and the runners."""
