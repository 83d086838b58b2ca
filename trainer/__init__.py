"""The trainer around the SAM step (not installed: run from the repository root, like models/ and data/).

spec (validate and derive once) -> build -> run (loop, rundir, tracking, cluster, hooks); see the README.
"""
