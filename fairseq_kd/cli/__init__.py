"""Console tools (``fairseq-kd-*``)."""
