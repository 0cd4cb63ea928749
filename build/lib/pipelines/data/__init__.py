"""Ray Data ingest: the manifest's clips decoded by actor pools, epoch streams, several datasets, video checks."""
