"""Storage, weights files, contributor packages and local state: bytes in and out, bounded."""
