//! Integration tests against real PostgreSQL (placeholder until the harness lands).
