"""Models, local training, the task settings contributors train by, workloads and data."""
