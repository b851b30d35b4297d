"""``kdkit study``: grids of ordinary runs, efficiency measurements, and reports.

* :mod:`kdkit.study.grid` — the grid file (``GRID.yaml``) and its expansion into run points;
* :mod:`kdkit.study.resolve` — each point as a run file, validated like ``kdkit run`` would;
* :mod:`kdkit.study.shard` — ``--shard i/n``: disjoint, coordination-free splits of the runs;
* :mod:`kdkit.study.runner` — run what is incomplete (skip, resume, record failures);
* :mod:`kdkit.study.estimate` — the ``--dry-run`` listing and its cost estimate;
* :mod:`kdkit.study.results` — reading run directories (status, point, results);
* :mod:`kdkit.study.efficiency` — parameters, FLOPs, latency, throughput, memory, training time;
* :mod:`kdkit.study.tables`, :mod:`kdkit.study.figures`, :mod:`kdkit.study.html` — the report.

See ``docs/reproduction.md`` for the user's view.
"""
