"""Test doubles for services that cannot run here (Google Sheets), served over real HTTP."""
