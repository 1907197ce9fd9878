"""The seed's API behind the eight top-level seed modules."""
