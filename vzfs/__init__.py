"""vzfs: a container manager whose whole interface is a mounted filesystem."""

__version__ = "0.1.0"
