"""Mirrors Triton qa/L0_secure_grpc: gRPC over TLS and mutual TLS."""
