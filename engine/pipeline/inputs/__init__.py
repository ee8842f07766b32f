"""Data layer: parallel sentences (FLEURS or the embedded corpus), speech, and the four task views."""
