"""``python -m bench``: the burst benchmark."""

from bench.burst import main

raise SystemExit(main())
