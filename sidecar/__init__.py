"""Serve an API key pair from AWS Secrets Manager to the containers of one ECS task."""

__version__ = "0.1.0"

__all__ = ["__version__"]
