"""The data core: machinery every task may use, naming no task.

* :mod:`kdkit.data.task` — :class:`~kdkit.data.task.CodeTask`, a base for tasks read from files
  in a public format (``data_dir`` / ``hub`` / offline ``source``), with the Arrow cache;
* :mod:`kdkit.data.build` — what offline builders share (options base, splits, report, writers);
* :mod:`kdkit.data.corpus`, :mod:`kdkit.data.sources`, :mod:`kdkit.data.pyfuncs` — functions of
  real Python source trees;
* :mod:`kdkit.data.formats` — JSON lines and split files read safely, hub datasets;
* :mod:`kdkit.data.fingerprint`, :mod:`kdkit.data.paths`, :mod:`kdkit.data.metrics`,
  :mod:`kdkit.data.tokenizers` — hashes, the cache root, metrics, tokenisation.

Concrete tasks (their formats, builders and options) live in their plugin packages,
``kdkit.plugins.tasks.<task>``.
"""
