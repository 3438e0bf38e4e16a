"""The loss maths of every fairseq-kd criterion."""
