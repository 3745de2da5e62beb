"""The example app's management commands."""
