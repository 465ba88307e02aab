"""Models and the batched engine. Knows nothing of the store; never imports textual or rich."""
