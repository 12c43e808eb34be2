"""Simulated people, cameras and crowds with ground truth, for the privacy evaluation only."""
