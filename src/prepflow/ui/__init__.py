"""``prepflow ui``: a read-only dashboard of the local jobs, served on a loopback address."""
