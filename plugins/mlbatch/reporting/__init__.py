"""Reporting: what a run, a model version or the fleet looks like to a person.

Run and version reports, ``summary.json``, the cost line, ``mlbatch status`` and the SQL that
``mlbatch sql`` prints. It reads what the stages wrote; no stage imports it.
"""
