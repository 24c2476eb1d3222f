"""DAQ ingest: bytes and frames from the DAQ PCs, nothing about statistics."""
