"""Deprecated: ``fclens.scanning.store`` was split into :mod:`.manifest`, :mod:`.writer` and :mod:`.reader`.

Its names still import from here, with a DeprecationWarning, for one release.
"""

from fclens import deprecation

__getattr__ = deprecation.moved(
    __name__,
    {
        **dict.fromkeys(
            ("HEAD_FILE", "MANIFEST", "Manifest", "ScanError", "file_sha256", "head_sha256", "shard_paths"),
            "fclens.scanning.manifest",
        ),
        **dict.fromkeys(("ScanWriter", "shard_bytes"), "fclens.scanning.writer"),
        **dict.fromkeys(("IncompleteScanWarning", "Scan", "read_scan"), "fclens.scanning.reader"),
    },
)
