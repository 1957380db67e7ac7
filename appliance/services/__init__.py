"""What the api does, one module per concern; routes (and the CLI) call these."""
