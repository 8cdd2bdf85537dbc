"""Kafka Ingress: invoke serverless handlers from Kafka records."""

__version__ = "0.1.0"
__all__ = ["__version__"]
