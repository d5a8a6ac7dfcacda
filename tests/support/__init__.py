"""Helpers the test modules share (the repo's root, job inputs, the launchers' fake job, specs, the
synthetic warehouse, label-sync fixtures, app-DB checks, the embedded pipeline): one place, so that
no test module imports another."""
