"""The reporter: result tables, paired significance tests and plots from what sweeps stored."""
