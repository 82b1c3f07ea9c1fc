"""The CSV side of the worker: the dialect and layout (``dialect``), the file cut into chunks of
whole records (``chunks``), and records to messages (``encode``).

The standard library's module stays ``csv`` inside this package: imports are absolute.
"""
