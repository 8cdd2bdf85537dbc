"""Example handlers, written once with the SDK and deployable both ways.

=================  =====================  ============================================
module             service (type)         use-case
=================  =====================  ============================================
``greeter``        Greeter (service)      greet new members; stateless, parallel
``accounts``       Account (object)       per-account balance fed from a payments topic
``signup``         Signup (workflow)      one sign-up per user ID, run exactly once
``audit``          AuditLog (service)     raw bytes in: keep a digest of every record
=================  =====================  ============================================

Each module exposes ``handler`` (its AWS Lambda entry point, see ``serverless.yml``) and
:mod:`handlers.app` serves all of them over HTTP (``uvicorn handlers.app:app``). State is kept
in memory (:mod:`handlers.state`) to keep the examples self-contained; a real deployment keeps
it in DynamoDB, written together with the invocation ID for idempotency.
"""
