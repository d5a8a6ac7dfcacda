"""Helpers the test modules share (job inputs, specs, label-sync fixtures, app-DB checks, the
embedded pipeline): one place, so that no test module imports another."""
