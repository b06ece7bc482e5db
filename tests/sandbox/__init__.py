"""Tests of the local vendor sandboxes (sandbox/)."""
