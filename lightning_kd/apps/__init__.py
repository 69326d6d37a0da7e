"""Entry points: the ``lightning-kd`` CLI (LightningCLI plus tools), the multi-stage pipeline, the quickstart.
The only layer that may change process-wide state (warning filters, thread counts)."""
