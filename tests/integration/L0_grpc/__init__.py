"""Mirrors Triton qa/L0_grpc (RestrictedProtocolTest) and qa/L0_http (RestrictedAPITest)."""
