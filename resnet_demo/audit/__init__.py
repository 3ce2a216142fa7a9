"""Audit a whole image set: every image explained, the maps of each class clustered (SpRAy)."""
