"""The power-loss simulator: record every change a run makes to the disk, build the states a
power cut could leave, and check that each one recovers to a store that kept every acknowledged
append and every event a reader was shown. The crash model is in :mod:`.model`; ``docs/HARNESS.md``
explains it and how to reproduce a failing state from its seed."""
