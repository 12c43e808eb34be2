"""The privacy evaluation: measures (metrics), the simulated run (run) and the verdict table and plots (report)."""
