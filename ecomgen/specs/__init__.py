"""One module per served model: its ``ServedModel`` spec (contract, steps, deployment)."""
