"""Pulumi components of the classroom project."""
