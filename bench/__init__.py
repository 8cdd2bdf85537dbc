"""The benchmark harness behind ``make bench``: our poller against a minimal reference loop.

``python -m bench`` starts its own Kafka broker, a counting moto server and handler servers
(each in its own process), produces a workload and runs, scenario by scenario, both the
Kafka Ingress poller and a bare aiokafka → HTTP loop over identical records. See
``bench/README.md`` for the flags and ``docs/benchmarks.md`` for how to read the table.
"""
