"""Invokers call handlers: over HTTP or through the AWS Lambda Invoke API."""
