"""What every other package stands on: user-facing errors, atomic output files, the process's life,
the metric-group records and the list of other libraries' private APIs.

May import: nothing of this package (the bottom layer; ``tests/test_house.py`` checks every layer).
"""
