"""The command groups of `hfgi`, one module each; ``cli`` puts them under one app."""
