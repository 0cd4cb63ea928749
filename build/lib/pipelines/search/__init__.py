"""Searches and campaigns: Ray Tune over YAML search spaces, campaign grids of runs, their reports."""
