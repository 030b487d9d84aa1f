"""Other libraries on both sides of divqat's black box (art.py: the Adversarial Robustness Toolbox)."""
