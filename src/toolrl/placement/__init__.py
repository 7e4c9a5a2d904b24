"""Where training and rollouts run: memory plans (pure) and the vLLM placements (local, colocate, server)."""
