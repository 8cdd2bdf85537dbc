"""``python -m adapter`` is the ``kafka-ingress`` command."""

from adapter.cli import main

raise SystemExit(main())
